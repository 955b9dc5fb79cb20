"""One module per ``rtmove`` sub-command; each has ``register(subparsers)``.

``register`` adds the sub-command's parser and sets ``handler`` (a function of the
parsed arguments returning the exit code), so ``client.cli`` stays a dispatcher.
"""
