//! Pack files: naming, reading entries back, scanning a pack from its header.
