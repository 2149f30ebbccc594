"""Frameworks and clients that reach the API another way than the anthropic SDK, tested with
the real packages against the emulator."""
