# Module dependency graph of core (top-level modules) from `crate::<module>` references,
# excluding test-only files; prints any cycle.
import os, re, sys
root = sys.argv[1]
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or f == 'lib.rs' or 'tests' in f: continue
        rel = os.path.relpath(os.path.join(dp, f), root)
        top = rel.split(os.sep)[0].removesuffix('.rs')
        src = open(os.path.join(dp, f)).read()
        src = re.split(r'#\[cfg\(test\)\]\s*mod tests|#\[cfg\(test\)\]\s*pub\(crate\) mod tests', src)[0]
        src = "\n".join(l for l in src.split("\n") if not l.lstrip().startswith("//"))
        deps = set(re.findall(r'crate::([a-z_]+)', src)) - {top}
        mods.setdefault(top, set()).update(deps)
known = set(mods)
for m in mods: mods[m] &= known
# reexports in lib.rs: crate::verify etc.; fine.
cycles = []
def dfs(n, stack, seen):
    for d in sorted(mods.get(n, ())):
        if d in stack: cycles.append(stack[stack.index(d):] + [d]); continue
        if d not in seen: seen.add(d); dfs(d, stack + [d], seen)
for m in sorted(mods): dfs(m, [m], {m})
print("modules:", len(mods)); print("cycles:", sorted({' -> '.join(c) for c in cycles}) or "none")
