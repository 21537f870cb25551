// A procwarden policy plugin in JavaScript: refuse piping a download into a shell
// (`curl https://... | sh`, `wget -qO- ... | sudo bash`).
//
// Built with componentize-js against wit/policy/v0.1.0 (world `policy-plugin`):
//
//   componentize-js policy.js --wit ../../../wit/policy/v0.1.0 -n policy-plugin \
//       -d stdio random clocks http fetch-event -o js_policy.wasm
//
// `scripts/build-lang-plugins.sh` does this with a componentize-js it installs under target/.
//
// WIT values in JavaScript: records are objects with camelCase fields (`req.timeoutSeconds`),
// `option<T>` is the value or `undefined`, a variant is `{ tag, val }`, and an enum is its
// case name as a string.

import { log } from "procwarden:policy/host@0.1.0";

const DOWNLOADERS = new Set(["curl", "wget", "fetch"]);
const SHELLS = new Set(["sh", "bash", "zsh", "dash", "ksh", "fish", "python", "python3", "node", "perl", "ruby"]);
// Words that run the next word as the command.
const WRAPPERS = new Set(["sudo", "doas", "env", "exec", "command", "nice", "time"]);

// The program a simple command runs: its first word that is not a wrapper, an assignment
// (`FOO=1`) or an option of a wrapper. Quotes are dropped, not parsed exactly: a policy only
// needs the program names.
function program(simple) {
  const words = simple.replace(/["']/g, "").trim().split(/\s+/).filter((w) => w.length > 0);
  for (const word of words) {
    if (WRAPPERS.has(word) || word.startsWith("-") || /^[A-Za-z_][A-Za-z0-9_]*=/.test(word)) continue;
    return word.split("/").pop();
  }
  return undefined;
}

// Whether some pipeline of the line has a downloader before a shell.
function pipesDownloadIntoShell(line) {
  for (const list of line.split(/;|&&|\|\||\n/)) {
    const stages = list.split(/\|(?!\|)/).map(program);
    const download = stages.findIndex((p) => DOWNLOADERS.has(p));
    if (download >= 0 && stages.slice(download + 1).some((p) => SHELLS.has(p))) return true;
  }
  return false;
}

export const policy = {
  onStart(req, _ctx) {
    if (pipesDownloadIntoShell(req.command)) {
      log("info", `denied a download piped into a shell: ${req.command}`);
      return {
        tag: "deny",
        val:
          "js-policy: piping a download into a shell is not allowed; download the script to a " +
          "file, read it, then run it.",
      };
    }
    return { tag: "allow", val: req };
  },
};
