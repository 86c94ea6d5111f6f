"""When storage fails the client gets 451 4.3.0 and nothing half-written is queued."""

import shutil

from conftest import code, open_transaction


def test_broken_spool_gives_451_and_queues_nothing(spawn_relay):
    relay = spawn_relay(**{"relay.allow_networks": ["127.0.0.0/8"]})
    # Replace the spool directory with a plain file: every body write now fails with
    # ENOTDIR, which no permission bit (root ignores those) can get around.
    spool = relay.data_dir / "spool"
    shutil.rmtree(spool)
    spool.write_text("not a directory")
    c = open_transaction(relay)
    c.cmd("DATA")
    reply = c.cmd("From: a@sender.test\r\nSubject: doomed\r\n\r\nbody\r\n.")
    assert code(reply) == "451 4.3.0", reply
    assert relay.queue_list() == []
    # A large body (streamed to its own file) fails the same way.
    c.cmd("MAIL FROM:<a@sender.test>")
    c.cmd("RCPT TO:<b@example.org>")
    c.cmd("DATA")
    c.send(b"From: a@sender.test\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 300)
    assert code(c.cmd(".")) == "451 4.3.0"
    assert relay.queue_list() == []
    # Once storage is back, mail flows again without a restart.
    spool.unlink()
    (spool / "large").mkdir(parents=True)
    c.cmd("MAIL FROM:<a@sender.test>")
    c.cmd("RCPT TO:<b@example.org>")
    c.cmd("DATA")
    assert "queued as" in c.cmd("From: a@sender.test\r\nSubject: ok\r\n\r\nbody\r\n.")
    assert len(relay.queue_list()) == 1
