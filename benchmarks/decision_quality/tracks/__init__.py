"""One module per track: learning (2), calibration (4), refund (3), attacks (1)."""
