"""Sender: tracking calls on one background thread. A server that never answers costs one attempt
per retry, not one per waiting call; a value the store refuses holds nothing back."""

from __future__ import annotations

from functools import partial

import mlflow
import pytest

from plugins.sender import Sender
from tests.conftest import free_port


@pytest.fixture
def sender():
    sender = Sender()
    yield sender
    sender.close()


def test_once_the_server_does_not_answer_the_other_calls_wait_untried(tracking_uri, monkeypatch, sender):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = {"client": mlflow.MlflowClient(f"http://127.0.0.1:{free_port()}")}  # nobody listens there
    tried = []

    def request(name):
        def call():
            tried.append(name)
            server["client"].search_experiments()  # a real request

        return call

    written = []
    disk = {"full": True}

    def write(name):
        if disk["full"]:
            raise OSError("No space left on device")
        written.append(name)

    for name in ("a", "b", "c"):
        sender.submit(name, request(name))
    sender.submit("writing a file", lambda: written.append("file"), local=True)
    sender.submit("writing another", partial(write, "another"), local=True)
    assert sender.flush() == ["a", "b", "c", "writing another"]
    assert tried == ["a"] and written == ["file"]  # local work never waits for a server

    disk["full"] = False
    sender.retry()  # the oldest call tries the server again; the others wait, in order
    assert sender.flush() == ["a", "b", "c"]
    assert tried == ["a", "a"] and written == ["file", "another"]  # a failed local write is retried as local

    server["client"] = mlflow.MlflowClient(tracking_uri)  # the server is back
    sender.retry()
    assert sender.flush() == []
    assert tried == ["a", "a", "a", "b", "c"]


def test_a_refused_value_is_reported_once_never_retried_and_holds_nothing_back(tracking_uri, sender, caplog):
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("refused")).info.run_id
    client.log_param(run_id, "units", "32")
    sender.submit("changed param", partial(client.log_param, run_id, "units", "64"))  # MLflow refuses a change
    sender.submit("loss", partial(client.log_metric, run_id, "loss", 0.5))
    sender.submit("registering model/", partial(client.create_registered_model, "bad/name"))  # a name it refuses
    assert sender.flush() == []  # nothing kept for a retry or for experiments.sync: it is no outage
    assert client.get_run(run_id).data.metrics == {"loss": 0.5}
    assert list(sender.refused) == ["changed param", "registering model/"]
    assert sender.refused["changed param"].startswith("MlflowException: Changing param values is not allowed")
    sender.retry()
    assert sender.flush() == []
    refusals = [record.getMessage() for record in caplog.records if "the server refused" in record.getMessage()]
    assert len(refusals) == 2 and "changed param" in refusals[0]


def test_a_local_write_that_fails_for_another_reason_than_the_disk_is_not_retried_and_its_upload_is_skipped(sender):
    done = []

    def unserializable():
        done.append("write")
        raise NotImplementedError("must override get_config()")

    sender.submit("writing model/", unserializable, local=True)
    sender.submit("model/", lambda: done.append("upload"), needs="writing model/")
    sender.submit("history.csv", lambda: done.append("history"))
    assert sender.flush() == []  # nothing kept for a retry
    assert sender.not_written == {"writing model/": "NotImplementedError: must override get_config()"}
    sender.retry()
    assert sender.flush() == [] and done == ["write", "history"]

    sender.submit("writing model/", lambda: done.append("write"), local=True)  # written after all (a fixed model)
    sender.submit("model/", lambda: done.append("upload"), needs="writing model/")
    assert sender.flush() == [] and sender.not_written == {} and done[-2:] == ["write", "upload"]


def test_a_call_that_an_earlier_one_did_the_job_of_is_skipped_also_when_it_was_kept_for_a_retry(sender):
    """model/ goes only where no logged model was made, whether that is known at once or after a retry."""
    server_up, made, done = [False], [], []

    def upload():
        if not server_up[0]:
            raise OSError("the artifact store is full")
        done.append("model/")

    def make_logged_model():
        if server_up[0]:
            made.append("m-1")

    sender.submit("logged model", make_logged_model)
    sender.submit("model/", upload, unless=lambda: bool(made))
    assert sender.flush() == ["model/"] and made == []  # no logged model: model/ was tried, and kept
    server_up[0] = True
    sender.submit("logged model", make_logged_model)  # made this time, before the retry of model/
    sender.retry()
    assert sender.flush() == [] and made == ["m-1"] and done == []

    made.clear()
    sender.submit("model/", upload, unless=lambda: bool(made))
    assert sender.flush() == [] and done == ["model/"]
