"""The runner: command-line entry points and the glue between conf/ and Keras."""
