"""A server's failure raised here: the same exception type where it is one we know, a
traceback that ends at the user's line, and a notebook cell named as IPython names it."""

from __future__ import annotations

import traceback

import pytest

from nnsight_lab.errors import OutOfOrderError, PolicyError, RemoteError
from nnsight_lab.remote.failures import exception_of, raise_failure
from nnsight_lab.remote.schema import Failure, Frame


def test_known_types_come_back_as_themselves_and_others_as_remote_errors():
    assert type(exception_of(Failure("IndexError", "builtins", "out of range"))) is IndexError
    error = exception_of(Failure("OutOfOrderError", "nnsight_lab.errors", "late"))
    assert type(error) is OutOfOrderError
    other = exception_of(Failure("OutOfMemoryError", "torch", "CUDA out of memory"))
    assert type(other) is RemoteError and "OutOfMemoryError: CUDA out of memory" in str(other)
    not_an_error = exception_of(Failure("print", "builtins", "x"))  # a name, not a class
    assert type(not_an_error) is RemoteError


def test_the_traceback_ends_at_the_users_line(tmp_path):
    path = tmp_path / "script.py"
    path.write_text("a = 1\nb = 2\nc = a[5]\n")
    failure = Failure("IndexError", "builtins", "list index out of range")
    failure = Failure(
        failure.type, failure.module, failure.message, [Frame(str(path), 3, "<module>")]
    )
    with pytest.raises(IndexError) as info:
        raise_failure(failure)
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (last.filename, last.lineno, last.line) == (str(path), 3, "c = a[5]")


def test_a_policy_error_names_a_notebook_cell_as_ipython_does():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    filename = shell.compile.cache("x = 1\nimport os\n", 7)
    message = f"{filename}:2: `import os` is not allowed on a model server (rule: no imports)."
    failure = Failure("PolicyError", "nnsight_lab.errors", message, [Frame(filename, 2, "x")])
    error = exception_of(failure)
    assert isinstance(error, PolicyError) and error.lineno == 2
    assert str(error).startswith("Cell In[7]:2: `import os`")
