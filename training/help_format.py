"""Help text for the `facewatch train` commands: each option says its default."""

from __future__ import annotations

import argparse

ARGPARSE_DEFAULT = " (default: %(default)s)"
# --no-progress (align, embed, validate): bars are drawn only on a terminal anyway
NO_PROGRESS_HELP = "no progress bar (there is none when stderr is not a terminal: a log, cron)"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Ends an option's help with "(default: X)" when it has a default to show (not None, not
    an empty string, not a plain switch) and its text does not state one already; an --x /
    --no-x flag says on or off."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x
            # Python < 3.12 appends its own " (default: %(default)s)" (True / False)
            text = text.removesuffix(ARGPARSE_DEFAULT)
            if "%(default)" in text or "(default:" in text:
                return text
            return f"{text} (default: {'on' if default else 'off'})"
        if "%(default)" in text or "(default:" in text:
            return action.help
        if action.nargs == 0:  # a switch, or --help
            return action.help
        if default is None or default is argparse.SUPPRESS or default == "":
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, "*"):
            return action.help  # a required positional
        return f"{text} (default: %(default)s)"
