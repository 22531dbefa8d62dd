"""The ``discore-voice`` command line: one module per subcommand, errors turned into one line."""
