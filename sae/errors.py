"""User-facing errors: bad input that the CLI reports as one line and exit code 2."""


class MonoscopeError(Exception):
    """Raised for input a user can fix (missing file, bad shape, uncached model); never for bugs."""


def load_npy(path, what: str):
    """Return the .npy array at `path`, memory-mapped, or refuse it in one line naming `what` it should be: a missing,
    empty, truncated or pickled file is the user's to fix, not a stack trace (numpy's EOFError would even reach
    click as a bare "Aborted.")."""
    import pickle
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise MonoscopeError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise MonoscopeError(f"{what} {path}: the file is empty")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise MonoscopeError(f"{what} {path}: not a readable .npy array ({e})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        raise MonoscopeError(f"{what} {path}: an .npz archive, not one .npy array")
    return array


def load_token_rows(path, what: str):
    """Return integer token rows [n_seq, n_ctx] from a .npy file (memory-mapped), or refuse it in one line."""
    import numpy as np

    rows = load_npy(path, what)
    if rows.ndim != 2 or len(rows) == 0 or not np.issubdtype(rows.dtype, np.integer):
        raise MonoscopeError(f"{what} {path}: expected a non-empty [n_sequences, n_ctx] integer array, got shape "
                             f"{rows.shape} and dtype {rows.dtype}")
    return rows


def load_json(path, make: str):
    """Return the JSON document at `path`, or refuse a missing or malformed one in one line naming the command that
    `make`s it (e.g. "run `monoscope corpus` first")."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MonoscopeError(f"missing {path}: {make}") from None
    except ValueError as e:
        raise MonoscopeError(f"{path} is not valid JSON ({e}): {make}") from None
