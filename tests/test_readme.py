"""The README and docs/ as a reader meets them: code fences that render, paths that exist, and commands
whose scripts and flags exist."""
import glob
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
TOP = ('configs', 'tools', 'benchmarks', 'docs', 'evit_mm', 'tests')
REPO_PATH = re.compile(r'(?<![\w/.])((?:%s)/[\w./{},*-]*)' % '|'.join(TOP))
USER_FILES = ('my_voc',)  # what the README tells the user to create


def _expand_braces(path: str):
    parts = re.split(r'\{([^}]*)\}', path)
    choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
    return [''.join(c) for c in itertools.product(*choices)]


def _code_blocks(text: str):
    return re.findall(r'(?ms)^```(\w*)\n(.*?)^```$', text)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_code_fences_stand_alone_and_pair_up(page):
    opened = None
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if '```' not in line:
            continue
        assert re.fullmatch(r'```[\w-]*', line), f'{page.name}:{number}: fence shares its line: {line!r}'
        if opened is None:
            opened = number
        else:
            assert line == '```', f'{page.name}:{number}: a closing fence takes no language'
            opened = None
    assert opened is None, f'{page.name}:{opened}: fence never closed'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_named_paths_exist(page):
    text = page.read_text()
    missing = []
    for path in set(REPO_PATH.findall(text)):
        path = path.rstrip('.,')
        if any(name in path for name in USER_FILES):
            continue
        for candidate in _expand_braces(path):
            if not glob.glob(str(REPO / candidate)):
                missing.append(candidate)
    for target in re.findall(r'\]\(([^)]+)\)', text):
        target = target.split('#')[0]
        if target and not target.startswith(('http://', 'https://')):
            if not (page.parent / target).exists():
                missing.append(target)
    assert not missing, f'{page.name} names paths that do not exist: {sorted(missing)}'


def _commands(page: Path):
    """``(script, flags)`` of every ``python SCRIPT ...`` / ``bash SCRIPT ...`` in bash blocks."""
    for language, block in _code_blocks(page.read_text()):
        if language != 'bash':
            continue
        for line in block.replace('\\\n', ' ').splitlines():
            words = line.split('#')[0].split()
            while words and '=' in words[0]:  # VAR=value prefixes
                words.pop(0)
            if len(words) >= 2 and words[0] in ('python', 'bash') and words[1] != '-m':
                flags = re.findall(r'(?<![\w-])(--[a-z][\w-]*)', ' '.join(words[2:]))
                yield words[1], sorted(set(flags))


COMMANDS = sorted({(script, tuple(flags)) for page in PAGES for script, flags in _commands(page)})


def test_readme_names_commands():
    assert ('tools/install.sh', ()) in COMMANDS
    assert any(script == 'tools/train.py' for script, _ in COMMANDS)


# each script's --help, all in one process (one start-up of the frameworks, not one per script),
# each with the sys.path that `python SCRIPT` gives it
_HELP_ALL = r"""
import contextlib, io, json, os, runpy, sys, traceback
helps, site = {}, sys.path[1:]  # without the current folder that -c puts first
for script in sys.argv[1:]:
    sys.path[:] = [os.path.dirname(os.path.abspath(script))] + site  # as `python SCRIPT` has it
    sys.argv, stdout = [script, '--help'], io.StringIO()
    with contextlib.redirect_stdout(stdout):
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except Exception:
            code, stdout = 1, io.StringIO(traceback.format_exc())
    helps[script] = dict(code=code, stdout=stdout.getvalue())
print(json.dumps(helps))
"""


@pytest.fixture(scope='module')
def helps() -> dict:
    scripts = sorted({script for script, flags in COMMANDS if script.endswith('.py') and flags
                      and (REPO / script).is_file()})
    result = subprocess.run([sys.executable, '-c', _HELP_ALL, *scripts], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('script,flags', COMMANDS, ids=lambda v: v if isinstance(v, str) else '')
def test_commands_exist_with_their_flags(script, flags, helps):
    if any(name in script for name in USER_FILES):
        return
    assert (REPO / script).is_file(), f'{script} does not exist'
    if not script.endswith('.py') or not flags:
        return
    help_text = helps[script]
    assert help_text['code'] == 0, help_text['stdout'][-2000:]
    unknown = [flag for flag in flags if flag not in help_text['stdout']]
    assert not unknown, f'{script} --help has no {unknown}'


def test_deployment_figures_are_those_of_the_results_file():
    """The model zoo's per-precision tables (docs/model_zoo.md) are what ``deploy_speed.py --table``
    makes of the committed measurements (nothing typed in by hand)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('deploy_speed',
                                                  REPO / 'benchmarks' / 'deploy_speed.py')
    deploy_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy_speed)
    start, end = deploy_speed.README_MARKS
    section = (REPO / 'docs' / 'model_zoo.md').read_text().split(start, 1)[1].split(end, 1)[0]
    figures = json.loads((REPO / 'benchmarks/results/deploy_speed.json').read_text())
    tables = deploy_speed.markdown_tables(figures)
    assert section.strip() == tables.strip()
    for name, case in figures['cases'].items():  # every row names its CPU
        assert case['env']['device_name'] in tables


def test_license_and_citation_match_the_package():
    """LICENSE is the Apache-2.0 text setup.py declares; CITATION.cff cites this version and the
    two papers."""
    import yaml

    from evit_mm.version import __version__
    assert "license='Apache-2.0'" in (REPO / 'setup.py').read_text()
    text = (REPO / 'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    citation = yaml.safe_load((REPO / 'CITATION.cff').read_text())
    assert citation['license'] == 'Apache-2.0' and citation['version'] == __version__
    assert [r['title'].split(':')[0] for r in citation['references']] == ['EfficientViT', 'SHViT']


# ---- each fact in one place: no passage of three or more sentences on two pages ----------------------
SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z`*(\[_"])')


def _sentences(text: str):
    """The prose sentences of a page, in order: code fences, tables, headings, HTML comments and list
    markers removed, whitespace (line wrapping) collapsed."""
    text = re.sub(r'(?ms)^```[\w-]*\n.*?^```$', '\n', text)
    text = re.sub(r'(?s)<!--.*?-->', '\n', text)
    prose = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(('|', '#', '![')):
            line = ''
        prose.append(re.sub(r'^(?:[*-]|\d+\.)\s+', '', line))
    sentences = []
    for paragraph in re.split(r'\n\s*\n', '\n'.join(prose)):
        paragraph = ' '.join(paragraph.split())
        sentences += [s for s in SENTENCE_END.split(paragraph) if s]
    return sentences


def repeated_passages(pages: dict, run: int = 3):
    """``(page, other page, passage)`` for every ``run`` consecutive sentences of one page that
    appear, consecutive and in the same order, on another page."""
    first_seen = {}
    repeats = []
    for name, text in pages.items():
        sentences = _sentences(text)
        for i in range(len(sentences) - run + 1):
            passage = tuple(sentences[i:i + run])
            other = first_seen.setdefault(passage, name)
            if other != name:
                repeats.append((other, name, ' '.join(passage)))
    return repeats


def test_no_passage_repeated_across_docs():
    pages = {page.relative_to(REPO).as_posix(): page.read_text() for page in PAGES}
    repeats = repeated_passages(pages)
    assert not repeats, 'passages on two pages (keep them in one and link to it):\n' + '\n'.join(
        f'{a} and {b}: {passage[:300]}' for a, b, passage in repeats)


def test_repeated_passage_check_finds_a_copied_paragraph():
    paragraph = ('The first sentence names a fact. The second one adds a detail, e.g. a number like '
                 '1.5. The third sentence ends the paragraph.')
    pages = {'a.md': f'# A\n\nSomething else.\n\n{paragraph}\n', 'b.md': f'Intro here.\n\n{paragraph}\n'}
    assert [(a, b) for a, b, _ in repeated_passages(pages)] == [('a.md', 'b.md')]
    rewrapped = paragraph.replace('. ', '.\n', 1)  # line wrapping does not hide a copy
    assert repeated_passages({'a.md': paragraph, 'b.md': rewrapped})
    two = 'The first sentence names a fact. The third sentence ends the paragraph.'
    assert not repeated_passages({'a.md': paragraph, 'b.md': two})


def test_next_block_names_what_the_main_job_writes(tmp_path):
    """The README's "next" commands name the main job's work dir, config copy, last checkpoint and
    a demo val image exactly as ``tools/train.py ... --demo`` writes them (the block itself runs
    after a real main job: outside this suite, it takes minutes)."""
    from evit_mm.config import load_config
    from evit_mm.runtime import DEMO_ROOT, apply_demo
    readme = (REPO / 'README.md').read_text()
    main = re.search(r'python (tools/train\.py (\S+) --demo)\n', readme)
    config = main[2]
    block = readme.split('## Next:', 1)[1].split('\n## ', 1)[0]
    cfg = load_config(REPO / config)
    apply_demo(cfg, 'mmdet', root=str(tmp_path / DEMO_ROOT))
    work_dir = f'work_dirs/{Path(config).stem}_demo'  # tools/train.py's default for --demo
    checkpoint = f'{work_dir}/epoch_{cfg.train_cfg.max_epochs}.pth'
    image = Path(cfg.val_dataloader.dataset.data_root).relative_to(tmp_path) / \
        cfg.val_dataloader.dataset.data_prefix.img / '000000.jpg'
    assert (tmp_path / image).is_file()
    written = {checkpoint, f'{work_dir}/{Path(config).name}', str(image)}
    named = set(re.findall(r'(?:work_dirs|data)/[\w./-]+', block))
    assert written <= named, named
    # anything else named is what the block's own deploy commands write
    others = named - written - {work_dir, f'{work_dir}/'}
    assert all(path.startswith('work_dirs/deploy_') for path in others), others
