"""What the command-line entry points (main, probe, plots, show_augmentations) share."""
from absl import app

# A bad config, missing data or a diverged run: the user's to fix, reported without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def run(main):
  """`app.run(main)`; a user error becomes one line `error: ...` on stderr and exit status 1."""
  try:
    app.run(main)
  except USER_ERRORS as e:
    raise SystemExit(f'error: {e}') from None
