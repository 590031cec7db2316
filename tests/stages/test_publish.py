"""Publishing into the docs: the README block is replaced by what the run's tables hold."""

import shutil
import subprocess

import pandas as pd
import pytest
import torch

from pipeline.stages import publish
from pipeline.tasks import TASKS, spec


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_publish_fills_the_readme_block_from_the_tables(tmp_path, kind):
    published = spec(kind).published
    tables, figures, marker, doc = (
        published.tables,
        published.figures,
        published.marker,
        published.doc,
    )
    results = tmp_path / "results" / "run"
    (results / "tables").mkdir(parents=True)
    (results / "figures").mkdir()
    for name in tables:
        (results / "tables" / f"{name}.md").write_text(f"| {name} |\n|---|\n| 0.123 |")
    for name in figures:
        (results / "figures" / f"{name}.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- {marker}:start -->\nold numbers\n<!-- {marker}:end -->\nmore\n")
    publish.publish(results, tmp_path / "docs", readme, kind)
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("intro") and text.endswith("more\n")
    first, *others = tables  # the README holds the first table and a link to every table
    assert f"| {first} |" in text and f"docs/{doc}" in text
    assert not any(f"| {name} |" in text for name in others)
    page = (tmp_path / "docs" / doc).read_text()
    assert all(f"| {name} |" in page for name in tables)
    for name in figures:
        assert f"docs/figures/{name}.png" in text
        assert (tmp_path / "docs" / "figures" / f"{name}.png").read_bytes() == b"png"
    assert "0.123" in (tmp_path / "docs" / doc).read_text()
    assert "Code: commit " in page and "Code: commit " in text  # provenance on both
    assert "Jobs:" not in page  # no resource records: nothing claimed about the jobs
    assert "| lr_search |" not in page  # an optional table the run did not write
    (results / "tables" / "lr_search.md").write_text("| lr_search |\n|---|\n| 0.005 |")
    publish.publish(results, tmp_path / "docs", readme, kind)
    assert "| lr_search |" in (tmp_path / "docs" / doc).read_text()  # on the full page
    assert "| lr_search |" not in readme.read_text()
    readme.write_text("no block here")
    with pytest.raises(ValueError, match=marker):
        publish.publish(results, tmp_path / "docs", readme, kind)


def test_no_two_tasks_publish_to_the_same_file():
    """Every task's published page, README block and figure files are its own: publishing one
    task never overwrites another's (docs/figures/ is shared)."""
    published = [t.published for t in TASKS.values()]
    figures = [name for p in published for name in p.figures]
    assert len(set(figures)) == len(figures), figures
    assert len({p.doc for p in published}) == len(published)
    assert len({p.marker for p in published}) == len(published)


def test_provenance_names_the_commit_the_jobs_and_the_host(tmp_path):
    """The commit of the code (marked where pipeline/, workflow/, config/ or the Snakefile
    differ from it; unknown outside git), the jobs' records summed to job-hours per device, and
    the host's CPU with the instruction set torch's kernels use there."""
    results = tmp_path / "run"
    (results / "tables").mkdir(parents=True)
    pd.DataFrame(
        {"job": ["a", "b", "c"], "stage": ["train_member"] * 3, "wall_s": [1800.0, 1800, 3600],
         "device": ["cpu", "cpu", "cuda:0"], "device_name": ["x86_64", "x86_64", "H200"],
         "threads": [1, 1, 4]}
    ).to_csv(results / "tables" / "resources.csv", index=False)  # fmt: skip
    text = publish.provenance(results, tmp_path / "not-git")
    assert "commit unknown (not a git checkout)" in text
    assert "3 resource records, 2.0 job-hours" in text
    assert "2 on cpu (x86_64), 1 thread;" in text and "1 on cuda:0 (H200), 4 threads." in text
    assert f"{publish.cpu_model()}, " in text
    assert f"torch CPU kernels {torch.backends.cpu.get_cpu_capability()})." in text
    if shutil.which("git") is None:
        pytest.skip("no git here")
    repo = tmp_path / "repo"
    (repo / "pipeline").mkdir(parents=True)
    (repo / "pipeline" / "a.py").write_text("x = 1\n")
    (repo / "notes.txt").write_text("n\n")

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                               "user.email=t@t", *args], check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    head = git("rev-parse", "HEAD")[:12]
    assert publish.code_commit(repo) == f"`{head}`"
    (repo / "notes.txt").write_text("changed, but not code\n")
    assert publish.code_commit(repo) == f"`{head}`"
    (repo / "pipeline" / "a.py").write_text("x = 2\n")
    assert publish.code_commit(repo) == f"`{head}` + uncommitted changes"
