"""User-facing errors: the CLI prints these as one clear line (exit 2) instead of a traceback."""


class MathRecipeError(ValueError):
    """Bad input from the user (recipe, data, arguments); the message names the culprit and the fix."""
