"""Names other projects' users already write, mapped onto clearance (``clearance.compat.bighub``)."""
