"""kfp.local's terminal output is kept to task status and the steps' own lines; the full log keeps everything."""

import io

from pipelines.local import QuietKfpOutput

# As kfp.local 2.17 prints a task (abridged: the executor input holds the whole params YAML).
TASK = """\
06:28:30.520 - INFO - Executing task \x1b[96m'ingest-op'\x1b[0m
06:28:30.521 - INFO - Streamed logs:

    [KFP Executor 2026-11-29 04:28:30,637 INFO]: Looking for component `ingest_op` in --component_module_path `/t/e.py`
    [KFP Executor 2026-11-29 04:28:30,639 INFO]: Got executor_input:
    {
        "inputs": {
            "parameterValues": {
                "params_yaml": "ingest:\\n  source: fashion_mnist\\n"
            }
        },
        "outputs": {"outputFile": "/t/executor_output.json"}
    }
    ingested 70,000 items (60,000 train, 10,000 test)
    [KFP Executor 2026-11-29 04:28:35,293 INFO]: Wrote executor output file to /t/executor_output.json.


06:28:35.420 - INFO - Task \x1b[96m'ingest-op'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
06:28:35.421 - INFO - Task \x1b[96m'ingest-op'\x1b[0m outputs:
    dataset: Dataset( name='dataset',
                      uri='/t/ingest-op/dataset',
                      metadata={'kind': 'images'} )
--------------------------------------------------------------------------------
06:28:35.423 - INFO - Executing task \x1b[96m'validate-op'\x1b[0m
    error: validation failed: train split has 3 classes
"""


def test_terminal_keeps_status_and_step_lines_and_the_log_keeps_everything():
    terminal, log = io.StringIO(), io.StringIO()
    out = QuietKfpOutput(terminal, log)
    for chunk in (TASK[:100], TASK[100:1000], TASK[1000:]):  # writes arrive in arbitrary pieces
        out.write(chunk)
    shown = terminal.getvalue()
    assert log.getvalue() == TASK
    assert "Executing task \x1b[96m'ingest-op'" in shown and "finished with status" in shown
    assert "ingested 70,000 items" in shown and "error: validation failed" in shown
    assert "Executing task \x1b[96m'validate-op'" in shown
    for hidden in ("params_yaml", "parameterValues", "KFP Executor", "metadata=", "outputFile", "uri="):
        assert hidden not in shown, hidden
