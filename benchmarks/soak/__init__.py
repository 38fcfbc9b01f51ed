"""The soak: minutes of mixed work on asyncsession, for ``tests/reliability/test_soak.py``.

Worker tasks run, until the deadline, a seeded random mix of operations on two shared
sessions (one lives for the whole run, the other is replaced, and closed under the
workers using it, now and then) and on private sessions opened and closed on the way:

- short queries with bound parameters (``collect``, ``first``, ``to_pandas``, ``to_arrow``);
- ``system$wait`` queries cancelled at random moments (before they start, a few
  checkpoints in, while they run: ``move_on_after``, ``fail_after``, a cancelled task group);
- ``collect_nowait`` jobs: awaited, polled, ``job.cancel()``-ed, cancelled while awaiting
  ``result()`` or while being submitted, failing, left to ``aclose()``;
- streaming (``to_local_iterator``, Arrow and pandas batches), to the end or broken off;
- failing SQL (a clear ``ProgrammingError``; the session still works afterwards);
- ``collect_many`` fan-outs (in order; with a failing member; cancelled);
- ``cancel_all()`` on the long-lived session, under the other workers' feet;
- sessions opened and closed: quickly, while their queries run, after ``cancel_all()``,
  from a cancelled scope, and logins cancelled half-way.

A query that is meant to be cancelled waits an hour: if a cancellation ever leaves one
behind, it is still RUNNING on the server at the end. Every outcome is checked: the
result, our own cancellation, the expected error, or ``QueryCancelledError`` /
``SessionClosedError`` only when a ``cancel_all()`` or ``aclose()`` of that session
explains it. After every ``aclose()`` the session must be gone from the server with none
of its queries running. Anything else is recorded as a problem (counted by kind, the
first of each kept with its traceback) and the run goes on; the test fails at the end.

Modules: ``workload`` (the operations and their checks), ``report`` (problems, tallies,
samples, figures); the process probes are ``benchmarks.probes``, shared with the
benchmarks. The test itself (baseline, bounds, profiles) is in ``tests/reliability``.
"""
