"""The wire: the protocol, tensor codecs and compression, channels, emulated links, credentials and liveness."""
