"""Bridges from other job systems into the pipeline (BullMQ: ``pixelgate bullmq``)."""
