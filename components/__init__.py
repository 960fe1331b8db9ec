"""KFP v2 components: one thin typed adapter per pipeline step, each calling one jetlib function."""
