"""Firmware-project layer: render the ESP-IDF + TFLM project from a described model, its
samples and C array, check it fits, build it, write the build manifest."""
