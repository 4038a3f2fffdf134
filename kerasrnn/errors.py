"""User-facing errors and the CLI wrapper that turns them into one line and exit code 2.

Library code raises `UserError` for anything the user can fix (a missing file, a bad column,
an unknown label). Entry points run through `cli_main`, so the user sees a single line naming
the file / line / column and what to do, never a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input or a bad request: message is shown as one line, exit code 2."""

    exit_code = 2


class ParityError(Exception):
    """An exported artifact does not answer like the Keras model (exit code 1)."""

    exit_code = 1


class InternalError(Exception):
    """A fault in our own code or graphs, not in the user's input (exit code 70, EX_SOFTWARE)."""

    exit_code = 70


def cli_main(main: Callable[[Sequence[str] | None], int | None], argv=None) -> int:
    from kerasrnn.native_logs import quiet_native_logs

    quiet_native_logs()  # TensorFlow / absl start-up noise off (KERASRNN_VERBOSE=1 keeps it)
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except ParityError as exc:
        print(f"parity failed: {exc}", file=sys.stderr)
        return ParityError.exit_code
    except InternalError as exc:
        print(f"internal error (a kerasrnn bug, not your input): {exc}", file=sys.stderr)
        return InternalError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
