"""A procwarden policy plugin in Python: refuse `git push --force`.

Built with componentize-py against wit/policy/v0.2.0 (world `policy-plugin`):

    componentize-py -d ../../../wit/policy/v0.2.0 -w policy-plugin \
        componentize --stub-wasi app -o python_policy.wasm

`--stub-wasi` matters: the Python runtime imports wasi:filesystem, which policy plugins are not
granted; the stubs trap if called, and nothing here calls them. `scripts/build-lang-plugins.sh`
does this with a componentize-py it installs under target/.

WIT values in Python: records are dataclasses with snake_case fields (`req.timeout_seconds`),
`option<T>` is the value or None, a variant case is a class (`Decision_Deny(reason)`,
`FrontEnd_Tool(name)`), and an enum is a Python enum (`host.LogLevel.INFO`).
"""

import shlex

from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Decision_Allow, Decision_Deny, FrontEnd_Tool

# Flags of `git push` that overwrite the remote branch.
FORCE_FLAGS = {"--force", "-f", "--force-with-lease", "--force-if-includes", "--mirror"}


def force_push(command: str) -> bool:
    """Whether any simple command of the line is `git ... push` with a force flag."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        # Unbalanced quotes: sh will refuse it too; look at the raw words instead.
        words = command.split()
    simple = []
    for word in words + [";"]:
        if word and all(c in ";&|()" for c in word):
            if _is_force_push(simple):
                return True
            simple = []
        else:
            simple.append(word)
    return False


def _is_force_push(words) -> bool:
    if "git" not in words:
        return False
    rest = words[words.index("git") + 1 :]
    if "push" not in rest:
        return False
    after = rest[rest.index("push") + 1 :]
    for word in after:
        if word in FORCE_FLAGS or word.startswith("--force-with-lease="):
            return True
        # Combined short flags (`-fu`), and a `+branch` refspec (force for that ref).
        if word.startswith("-") and not word.startswith("--") and "f" in word[1:]:
            return True
        if word.startswith("+") and len(word) > 1:
            return True
    return False


class Policy(exports.Policy):
    def on_start(self, req, ctx):
        if force_push(req.command):
            who = ""
            if isinstance(ctx.front_end, FrontEnd_Tool):
                who = f" (asked by the tool {ctx.front_end.value})"
            host.log(host.LogLevel.INFO, f"denied a force push{who}: {req.command}")
            return Decision_Deny(
                "python-policy: force pushes are not allowed here; push without --force "
                "(fetch and rebase first), or ask a person to force-push."
            )
        return Decision_Allow(req)
