"""Entry points that bring pixelgate to where its users already are (agents over MCP, queues)."""
