"""Model layer: read, check and describe an INT8 TFLite classifier; cost, arena, latency
estimate, rewrites, preprocessing, runtimes, host validation, where models come from."""
