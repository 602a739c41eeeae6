"""Compiled templates are kept in jinja2's per-user bytecode cache (compiling them cost more than reading a
million scalars); the cache can be turned off, and a cache that cannot be made is no error."""
from __future__ import annotations

import jinja2

from report_gen.render.context import template_environment


def test_templates_compile_once_into_jinja2s_own_cache_and_render_alike(monkeypatch):
    env = template_environment("html", autoescape=True)
    assert isinstance(env.bytecode_cache, jinja2.FileSystemBytecodeCache)
    monkeypatch.setenv("REPORT_GEN_TEMPLATE_CACHE", "0")
    plain = template_environment("html", autoescape=True)
    assert plain.bytecode_cache is None
    for name in env.list_templates():  # the cached and the freshly compiled code are the same template
        assert env.get_template(name).debug_info == plain.get_template(name).debug_info


def test_a_cache_folder_that_cannot_be_made_is_no_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("the temp folder is not private")  # what jinja2 raises for an unsafe folder

    monkeypatch.setattr(jinja2, "FileSystemBytecodeCache", refuse)
    env = template_environment("markdown", autoescape=False)
    assert env.bytecode_cache is None and env.list_templates()
