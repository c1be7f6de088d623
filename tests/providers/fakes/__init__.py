"""Protocol-faithful fakes of the providers' APIs, built on ``tests.providers.kit``."""
