"""Device layer: serial transport and ports (``sim`` included), the protocol client, flashing,
monitoring, panic decoding, benchmarks, the variant matrix, the virtual device, on-target
validation."""
