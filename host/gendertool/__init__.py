"""gendertool: put a small INT8 vision model on an ESP32-S3 and prove how fast and how right it runs."""

__version__ = "0.1.0"
