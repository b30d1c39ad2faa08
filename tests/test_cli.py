"""What every command does with a tracking store it cannot open: one line naming it, exit 2."""

from __future__ import annotations

import pytest

from experiments.compare import main as compare
from experiments.reproduce import main as reproduce
from experiments.sync import main as sync
from plugins.sync import main as plugins_sync
from tests.conftest import not_a_database


def unsent_folder(tmp_path):
    folder = tmp_path / "unsent" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "unsent.jsonl").write_text("")
    return folder


COMMANDS = {
    "reproduce": lambda t, uri: reproduce(["0123456789abcdef", "--tracking-uri", uri]),
    "compare": lambda t, uri: compare(["--tracking-uri", uri, "--output", str(t / "out")]),
    "sync": lambda t, uri: sync([str(unsent_folder(t)), "--tracking-uri", uri]),
    "plugins.sync": lambda t, uri: plugins_sync([str(unsent_folder(t)), "--tracking-uri", uri]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_file_that_is_no_database_is_one_line(tmp_path, capsys, command):
    path = not_a_database(tmp_path)
    before = path.read_bytes()
    assert COMMANDS[command](tmp_path, f"sqlite:///{path}") == 2
    error = capsys.readouterr().err.strip()
    assert (
        error
        == f"error: cannot open the tracking store sqlite:///{path}: (sqlite3.DatabaseError) file is not a database"
    )
    assert path.read_bytes() == before  # left as it was
