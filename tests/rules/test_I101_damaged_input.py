from builders.rulekit import hits, make_run, problem


def test_warning_and_error_problems_become_findings():
    run = make_run(problems=[problem("a/events.out.tfevents.1", "bad-length-crc", "warning", offset=1234),
                             problem("a/ckpt.pt", "lfs-pointer", "error"),
                             problem("a/events.out.tfevents.2", "truncated-record", "info", offset=99)])
    found = hits(run, "I101")
    assert [(h.subject, h.severity) for h in found] == [("a/events.out.tfevents.1", "warning"), ("a/ckpt.pt", "error")]
    assert found[0].evidence["offset"] == 1234
    assert "1234" in found[0].message


def test_info_problems_stay_out_of_findings():
    run = make_run(problems=[problem("x", "truncated-record", "info")])
    assert hits(run, "I101") == []
    assert len(hits(run, "I101", min_severity="info")) == 1
