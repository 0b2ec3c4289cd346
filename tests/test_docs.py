"""README.md stays a newcomer's page (short, opening with the commands CI runs), and no link of it
or of docs/*.md leads nowhere."""
import re

import pytest

from conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def without_code_blocks(text):
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(page):
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", without_code_blocks(page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_readme_is_short():
    assert len(README.read_text()) < 16_000


def test_readme_opens_with_the_install_and_test_commands_ci_runs():
    first, second = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)[:2]
    assert first.startswith("pip install -r requirements.txt && ") and " && python run.py " in first
    assert second == "python -m pytest -q\n"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    for target in LINK.findall(without_code_blocks(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target}"


def test_running_md_names_every_kind_of_network_that_the_help_names():
    """docs/running.md's -network row and run.py's --help both name every family of generator and every
    packaged generator."""
    import PULSE
    from weightfiles.families import FAMILIES
    from weightfiles.releases import PACKAGED
    row = next(line for line in (ROOT / "docs" / "running.md").read_text().splitlines() if line.startswith("| `-network"))
    help_text = PULSE.ModelOptions.__dataclass_fields__["network"].metadata["help"]
    for name in [family.title for family in FAMILIES.values()] + list(PACKAGED):
        assert name in row and name in help_text, name
