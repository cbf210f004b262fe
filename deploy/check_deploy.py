#!/usr/bin/env python3
"""Static checks of Sluice's deployment files (run by deploy/check.sh).

    python3 deploy/check_deploy.py toml|dockerfile|compose|kubernetes|all
    python3 deploy/check_deploy.py write-tomls DIR

Needs only the standard library (tomllib, Python 3.11+) and PyYAML (Debian
python3-yaml). Prints one line per check; exits 1 if any failed. Nothing
here talks to a container engine or a cluster: none runs on the machines
that run this.
"""

import fnmatch
import functools
import json
import os
import re
import sys
import tomllib

try:
    import yaml
except ImportError:  # pragma: no cover
    print("FAIL  PyYAML is missing: apt-get install python3-yaml")
    sys.exit(1)

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
EXAMPLE = os.path.join(ROOT, "sluice.example.toml")

failures = 0
checks = 0


def ok(cond, what, detail=""):
    """Record one check."""
    global failures, checks
    checks += 1
    if cond:
        print(f"ok    {what}")
    else:
        failures += 1
        print(f"FAIL  {what}" + (f": {detail}" if detail else ""))
    return cond


def rel(path):
    return os.path.relpath(path, ROOT)


# ---------------------------------------------------------------- TOML


def duration_seconds(s):
    """Go-style duration ("30s", "1h30m", "1500ms") in seconds."""
    if isinstance(s, (int, float)):
        return float(s)
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", s):
        if m.start() != pos:
            raise ValueError(f"bad duration {s!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"bad duration {s!r}")
    return total


def norm_segment(seg):
    # Tables keyed by a domain or a login ([quota.domains."example.com"],
    # [screen.overrides."info@example.com"]) are maps: any key goes.
    return "*" if ("." in seg or "@" in seg or seg.startswith('"')) else seg


def example_keys():
    """Every key path of sluice.example.toml, set or commented out, with
    the type of its example value where the value is set."""
    keys = {}
    with open(EXAMPLE, "rb") as f:
        parsed = tomllib.load(f)

    def walk(d, prefix):
        for k, v in d.items():
            path = prefix + [norm_segment(k)]
            if isinstance(v, dict):
                walk(v, path)
            else:
                keys[".".join(path)] = type(v)

    walk(parsed, [])
    section = []
    header = re.compile(r"^\s*#?\s*\[([^\]]+)\]\s*$")
    keyline = re.compile(r"^\s*#?\s*([a-z_][a-z0-9_]*)\s*=\s*\S")
    with open(EXAMPLE, encoding="utf-8") as f:
        for line in f:
            m = header.match(line)
            if m:
                section = [norm_segment(s.strip()) for s in re.findall(r'"[^"]*"|[^.]+', m.group(1))]
                continue
            m = keyline.match(line)
            if m:
                keys.setdefault(".".join(section + [m.group(1)]), None)
    return keys


def flatten(d, prefix=()):
    for k, v in d.items():
        path = prefix + (norm_segment(k),)
        if isinstance(v, dict):
            yield from flatten(v, path)
        else:
            yield ".".join(path), v


def check_toml_text(name, text, known):
    """Parse one shipped configuration and check every key against the
    example configuration. Returns the parsed document (or None)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        ok(False, f"{name}: parses as TOML", str(e))
        return None
    ok(True, f"{name}: parses as TOML")
    unknown, badtype = [], []
    for path, value in flatten(doc):
        if path not in known:
            unknown.append(path)
        elif known[path] is not None and not isinstance(value, known[path]):
            badtype.append(f"{path} is {type(value).__name__}, example has {known[path].__name__}")
    ok(not unknown, f"{name}: every key is one of sluice.example.toml", ", ".join(unknown))
    ok(not badtype, f"{name}: every value has the example's type", "; ".join(badtype))
    v = doc.get("submission", {}).get("shutdown_timeout")
    if v is not None:
        try:
            duration_seconds(v)
            ok(True, f"{name}: submission.shutdown_timeout is a duration")
        except ValueError as e:
            ok(False, f"{name}: submission.shutdown_timeout is a duration", str(e))
    return doc


def shipped_tomls():
    """(name, text) of every configuration we ship, the ConfigMap's too."""
    out = []
    for dirpath, _, files in os.walk(DEPLOY):
        for fn in sorted(files):
            if fn.endswith(".toml"):
                p = os.path.join(dirpath, fn)
                with open(p, encoding="utf-8") as f:
                    out.append((rel(p), f.read()))
    for path, doc in k8s_docs():
        if doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith(".toml"):
                    out.append((f"{rel(path)} ConfigMap {doc['metadata']['name']} {key}", text))
    return sorted(out)


def check_toml():
    known = example_keys()
    ok(len(known) > 50, "sluice.example.toml: keys found", f"only {len(known)}")
    for name, text in shipped_tomls():
        check_toml_text(name, text, known)


def load_toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


# ---------------------------------------------------------- Dockerfile

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
    "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
    "HEALTHCHECK", "SHELL",
}


def dockerfile_instructions(path):
    """(line number, INSTRUCTION, arguments) with continuations joined and
    comments, blank lines and parser directives dropped."""
    out, buf, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue  # comment lines inside a continuation are dropped
        if not buf:
            start = i
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((start, word, rest.strip()))
        buf = ""
    if buf:
        out.append((start, "<unterminated continuation>", buf))
    return out


def check_dockerfile():
    path = os.path.join(DEPLOY, "docker", "Dockerfile")
    name = rel(path)
    if not ok(os.path.isfile(path), f"{name}: exists"):
        return
    ins = dockerfile_instructions(path)
    bad = [f"line {n}: {w}" for n, w, _ in ins if w.upper() not in INSTRUCTIONS]
    ok(not bad, f"{name}: every line is a known instruction", "; ".join(bad))
    lower = [f"line {n}: {w}" for n, w, _ in ins if w.upper() in INSTRUCTIONS and w != w.upper()]
    ok(not lower, f"{name}: instructions in upper case", "; ".join(lower))
    first = next((w for _, w, _ in ins if w != "ARG"), None)
    ok(first == "FROM", f"{name}: the first instruction after ARGs is FROM", f"got {first}")

    stages, cur = [], None
    for n, w, a in ins:
        if w == "FROM":
            parts = a.split()
            parts = [p for p in parts if not p.startswith("--")]
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            cur = {"line": n, "image": parts[0] if parts else "", "alias": alias, "ins": []}
            stages.append(cur)
        elif cur is not None:
            cur["ins"].append((n, w, a))
    ok(len(stages) >= 2, f"{name}: multi-stage build", f"{len(stages)} stage(s)")
    if not stages:
        return
    build, final = stages[0], stages[-1]
    runs = " ".join(a for _, w, a in build["ins"] if w == "RUN")
    ok("CGO_ENABLED=0" in runs, f"{name}: the build stage builds with CGO_ENABLED=0")
    ok("go build" in runs and "./cmd/sluice" in runs, f"{name}: the build stage builds ./cmd/sluice")
    ok(re.search(r"(distroless/static|^scratch$)", final["image"]) is not None,
       f"{name}: the final stage is distroless/static or scratch", final["image"])
    aliases = {s["alias"] for s in stages[:-1] if s["alias"]}
    froms = [m.group(1) for _, w, a in final["ins"] if w == "COPY" for m in [re.search(r"--from=(\S+)", a)] if m]
    ok(froms and all(f in aliases for f in froms), f"{name}: COPY --from names an earlier stage", ", ".join(froms))
    users = [a for _, w, a in final["ins"] if w == "USER"]
    uid = users[-1].split(":")[0] if users else ""
    ok(users and uid not in ("root", "0", ""), f"{name}: the final stage runs as a non-root USER", users[-1] if users else "no USER")
    exposed = set()
    for _, w, a in final["ins"]:
        if w == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in a.split()}
    conf = load_toml(os.path.join(DEPLOY, "docker", "sluice.toml"))
    want = {port_of(a) for a in conf["submission"]["listen"] + conf["submission"]["listen_tls"]}
    want.add(port_of(conf["http"]["listen"]))
    ok(want <= exposed and {587, 465} <= exposed, f"{name}: EXPOSE {sorted(want)} (the image's listeners)", f"exposes {sorted(exposed)}")
    for _, w, a in final["ins"]:
        if w in ("ENTRYPOINT", "CMD"):
            try:
                v = json.loads(a)
                good = isinstance(v, list) and all(isinstance(x, str) for x in v)
            except json.JSONDecodeError:
                good = False
            ok(good, f"{name}: {w} is in exec form (no shell in the image)", a)
    hc = [a for _, w, a in final["ins"] if w == "HEALTHCHECK"]
    ok(all(h == "NONE" or "CMD [" in h for h in hc), f"{name}: HEALTHCHECK is NONE or exec form (no shell in the image)", "; ".join(hc))
    env = " ".join(a for _, w, a in final["ins"] if w == "ENV")
    vols = " ".join(a for _, w, a in final["ins"] if w == "VOLUME")
    ok(conf["data_dir"] in vols and conf["data_dir"] in env, f"{name}: VOLUME and SLUICE_DATA_DIR are the config's data_dir {conf['data_dir']}")
    ok(any(w == "STOPSIGNAL" and a == "SIGTERM" for _, w, a in final["ins"]), f"{name}: STOPSIGNAL SIGTERM")
    # The files the build needs must exist and pass the ignore file.
    need = ["go.mod", "go.sum", "cmd/sluice/main.go", "deploy/docker/sluice.toml"]
    ok(all(os.path.exists(os.path.join(ROOT, p)) for p in need), f"{name}: build inputs exist", ", ".join(need))
    ign = os.path.join(DEPLOY, "docker", "Dockerfile.dockerignore")
    if ok(os.path.isfile(ign), f"{rel(ign)}: exists"):
        pats = [l.strip() for l in open(ign, encoding="utf-8") if l.strip() and not l.startswith("#")]

        def ignored(p):
            hit = False
            for pat in pats:
                neg = pat.startswith("!")
                pat = pat.lstrip("!").lstrip("/")
                parts = p.split("/")
                prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
                if any(fnmatch.fnmatch(x, pat) or fnmatch.fnmatch(x, pat.replace("**/", "")) for x in prefixes):
                    hit = not neg
            return hit

        kept = [p for p in need + ["relay/spool/spool.go", "submit/server.go"] if ignored(p)]
        ok(not kept, f"{rel(ign)}: does not exclude build inputs", ", ".join(kept))


# -------------------------------------------------------------- compose


def check_compose():
    path = os.path.join(DEPLOY, "compose", "compose.yaml")
    name = rel(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        ok(isinstance(doc, dict), f"{name}: parses as YAML")
    except (OSError, yaml.YAMLError) as e:
        ok(False, f"{name}: parses as YAML", str(e))
        return
    base = os.path.dirname(path)
    services = doc.get("services") or {}
    ok({"sluice", "redis"} <= set(services), f"{name}: services sluice and redis", ", ".join(services))
    declared_vols = set((doc.get("volumes") or {}).keys())
    declared_nets = set((doc.get("networks") or {}).keys())
    for sname, svc in services.items():
        ok(bool(svc.get("image") or svc.get("build")), f"{name}: {sname} has an image or a build")
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                ok(os.path.exists(os.path.join(base, src)), f"{name}: {sname} bind mount {src} exists")
            else:
                ok(src in declared_vols, f"{name}: {sname} volume {src} is declared")
        for n in svc.get("networks") or []:
            ok(n in declared_nets, f"{name}: {sname} network {n} is declared")
    s = services.get("sluice") or {}
    r = services.get("redis") or {}
    b = s.get("build") or {}
    if b:
        ctx = os.path.normpath(os.path.join(base, b.get("context", ".")))
        ok(ctx == ROOT, f"{name}: sluice builds from the repository root", ctx)
        ok(os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))), f"{name}: sluice's dockerfile exists", b.get("dockerfile"))
    cmd = s.get("command") or []
    cfg_target = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
    ok(cfg_target is not None, f"{name}: sluice is started with --config")
    mounts = {}
    for v in s.get("volumes") or []:
        parts = v.split(":")
        mounts[parts[1]] = parts[0]
    conf = None
    if cfg_target in mounts:
        cpath = os.path.join(base, mounts[cfg_target])
        ok(os.path.isfile(cpath), f"{name}: the config {mounts[cfg_target]} is mounted at {cfg_target}")
        conf = load_toml(cpath)
    else:
        ok(False, f"{name}: the config file is mounted at {cfg_target}")
    if conf:
        dd = conf.get("data_dir")
        ok(dd in mounts and not mounts[dd].startswith((".", "/")), f"{name}: data_dir {dd} is a named volume", str(mounts.get(dd)))
        published = set()
        for p in s.get("ports") or []:
            published.add(int(str(p).split(":")[-1].split("/")[0]))
        want = {port_of(a) for a in conf["submission"]["listen"] + conf["submission"]["listen_tls"]}
        ok(want <= published, f"{name}: sluice publishes its listeners {sorted(want)}", f"publishes {sorted(published)}")
        grace = duration_seconds(s.get("stop_grace_period", "10s"))
        sd = duration_seconds(conf.get("submission", {}).get("shutdown_timeout", "30s"))
        ok(grace >= sd + 10, f"{name}: stop_grace_period {grace:.0f}s covers shutdown_timeout {sd:.0f}s plus 10s")
    env = s.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    ok(str(env.get("SLUICE_REDIS_URL", "")).startswith("redis://redis:"), f"{name}: SLUICE_REDIS_URL points at the redis service")
    dep = (s.get("depends_on") or {}).get("redis") if isinstance(s.get("depends_on"), dict) else None
    ok(bool(dep) and dep.get("condition") == "service_healthy", f"{name}: sluice waits for a healthy redis")
    hc = r.get("healthcheck") or {}
    ok(isinstance(hc.get("test"), list) and len(hc["test"]) > 1, f"{name}: redis has a healthcheck")
    ok(not r.get("ports"), f"{name}: redis is not published")
    ok(s.get("read_only") is True and "ALL" in (s.get("cap_drop") or []), f"{name}: sluice runs read-only with no capabilities")


# ----------------------------------------------------------- Kubernetes

K8S_DIR = os.path.join(DEPLOY, "kubernetes")
# Secrets the operator creates (README.md says how); the manifests may
# name them without defining them.
EXTERNAL_SECRETS = {"sluice-tls", "sluice-users", "sluice-dkim"}

@functools.cache
def k8s_docs():
    """(file, document) of every manifest listed in kustomization.yaml."""
    out = []
    kpath = os.path.join(K8S_DIR, "kustomization.yaml")
    try:
        with open(kpath, encoding="utf-8") as f:
            kust = yaml.safe_load(f)
        files = kust.get("resources") or []
    except (OSError, yaml.YAMLError):
        files = sorted(f for f in os.listdir(K8S_DIR) if f.endswith(".yaml") and f != "kustomization.yaml")
    for fn in files:
        p = os.path.join(K8S_DIR, fn)
        try:
            with open(p, encoding="utf-8") as f:
                for d in yaml.safe_load_all(f):
                    if d is not None:
                        out.append((p, d))
        except (OSError, yaml.YAMLError):
            pass  # reported by check_kubernetes
    return out


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_container(where, c, volumes, vct_names, required_probes):
    ok(bool(c.get("name")), f"{where}: container has a name")
    ok(bool(c.get("image")), f"{where}: container {c.get('name')} has an image")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if required_probes:
        ok(ports and all(isinstance(v, int) for v in ports.values()), f"{where}: container {c.get('name')} has numbered ports")
    for probe in required_probes:
        ok(probe in c, f"{where}: container {c['name']} has a {probe}")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        pr = c.get(probe)
        if not pr:
            continue
        h = pr.get("httpGet") or pr.get("tcpSocket")
        if h:
            port = h.get("port")
            ok(port in ports or port in ports.values(), f"{where}: {probe} port {port} is a container port")
        else:
            ok(bool((pr.get("exec") or {}).get("command")), f"{where}: {probe} has a handler")
    names = set(volumes) | set(vct_names)
    for m in c.get("volumeMounts") or []:
        ok(m.get("name") in names, f"{where}: volumeMount {m.get('name')} has a volume")
    sc = c.get("securityContext") or {}
    ok(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
       and (sc.get("capabilities") or {}).get("drop") == ["ALL"],
       f"{where}: container {c['name']} is unprivileged with a read-only root")
    return ports


def check_statefulset(where, spec, c, volumes, ports, configmaps):
    """A StatefulSet and its first container c, sluice, against the
    configuration in its ConfigMap: one spool volume per pod, ports, probes,
    mounted files, grace period."""
    pspec = (spec.get("template") or {}).get("spec") or {}
    vcts = spec.get("volumeClaimTemplates") or []
    vct_names = [(v.get("metadata") or {}).get("name") for v in vcts]
    ok(bool(spec.get("serviceName")), f"{where}: serviceName")
    ok(bool(vcts), f"{where}: volumeClaimTemplates (one spool per pod)")
    for v in vcts:
        vs = v.get("spec") or {}
        ok(bool(vs.get("accessModes")) and bool(((vs.get("resources") or {}).get("requests") or {}).get("storage")),
           f"{where}: volumeClaimTemplate {(v.get('metadata') or {}).get('name')} has accessModes and a storage request")
    args = c.get("args") or []
    cfgpath = args[args.index("--config") + 1] if "--config" in args else None
    ok(cfgpath is not None, f"{where}: sluice runs with --config")
    # Which ConfigMap key is the config file?
    sluice_conf = None
    for m in c.get("volumeMounts") or []:
        v = volumes.get(m["name"]) or {}
        if cfgpath and "configMap" in v and cfgpath.startswith(m["mountPath"].rstrip("/") + "/"):
            key = cfgpath[len(m["mountPath"].rstrip("/")) + 1:]
            text = (configmaps.get(v["configMap"]["name"], {}).get("data") or {}).get(key)
            ok(text is not None, f"{where}: {cfgpath} is key {key} of ConfigMap {v['configMap']['name']}")
            if text is not None:
                sluice_conf = tomllib.loads(text)
    if sluice_conf is None:
        ok(False, f"{where}: the configuration file comes from a ConfigMap")
        return
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
    dd = sluice_conf.get("data_dir")
    ok(mounts.get(dd) in vct_names, f"{where}: data_dir {dd} is the pod's own volumeClaimTemplate")
    want = {port_of(a) for a in sluice_conf["submission"]["listen"] + sluice_conf["submission"]["listen_tls"]}
    http_port = port_of(sluice_conf["http"]["listen"])
    ok(want | {http_port} <= set(ports.values()), f"{where}: containerPorts are the config's listeners {sorted(want | {http_port})}",
       f"have {sorted(ports.values())}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        h = (c.get(probe) or {}).get("httpGet") or {}
        port = ports.get(h.get("port"), h.get("port"))
        ok(h.get("path") == path and port == http_port, f"{where}: {probe} is GET {path} on the [http] port {http_port}")
    tls = sluice_conf.get("tls") or {}
    for k in ("cert_file", "key_file", "users_file"):
        f = tls.get(k) or (sluice_conf.get("auth") or {}).get(k)
        if f:
            ok(any(f.startswith(mp.rstrip("/") + "/") for mp in mounts), f"{where}: {k} {f} is on a mounted volume")
    sd = duration_seconds(sluice_conf.get("submission", {}).get("shutdown_timeout", "30s"))
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    tg = pspec.get("terminationGracePeriodSeconds", 30)
    ok(tg >= sd + pre + 10, f"{where}: terminationGracePeriodSeconds {tg} covers preStop {pre}s + shutdown_timeout {sd:.0f}s + 10s")
    env = {e["name"] for e in c.get("env") or []}
    ok("SLUICE_REDIS_URL" in env or sluice_conf.get("quota", {}).get("redis_url"), f"{where}: Redis URL is set (several instances share quotas)")


def check_kubernetes():
    kpath = os.path.join(K8S_DIR, "kustomization.yaml")
    try:
        with open(kpath, encoding="utf-8") as f:
            kust = yaml.safe_load(f)
        ok(True, f"{rel(kpath)}: parses as YAML")
    except (OSError, yaml.YAMLError) as e:
        ok(False, f"{rel(kpath)}: parses as YAML", str(e))
        return
    listed = kust.get("resources") or []
    present = sorted(f for f in os.listdir(K8S_DIR) if f.endswith(".yaml") and f != "kustomization.yaml")
    ok(sorted(listed) == present, f"{rel(kpath)}: lists every manifest", f"listed {listed}, present {present}")
    for fn in present:
        p = os.path.join(K8S_DIR, fn)
        try:
            with open(p, encoding="utf-8") as f:
                list(yaml.safe_load_all(f))
            ok(True, f"{rel(p)}: parses as YAML")
        except yaml.YAMLError as e:
            ok(False, f"{rel(p)}: parses as YAML", str(e))
    docs = k8s_docs()
    by_kind = {}
    for p, d in docs:
        where = f"{rel(p)} {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        ok(bool(d.get("apiVersion")) and bool(d.get("kind")) and bool((d.get("metadata") or {}).get("name")),
           f"{where}: apiVersion, kind, metadata.name")
        by_kind.setdefault(d.get("kind"), []).append((p, d, where))

    expected_api = {"StatefulSet": "apps/v1", "Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1",
                    "Secret": "v1", "Namespace": "v1", "PodDisruptionBudget": "policy/v1",
                    "NetworkPolicy": "networking.k8s.io/v1"}
    for kind, items in by_kind.items():
        for _, d, where in items:
            ok(expected_api.get(kind) == d.get("apiVersion"), f"{where}: apiVersion {d.get('apiVersion')}",
               f"expected {expected_api.get(kind)}")

    configmaps = {d["metadata"]["name"]: d for _, d, _ in by_kind.get("ConfigMap", [])}
    secrets = {}
    for _, d, where in by_kind.get("Secret", []):
        data = dict(d.get("stringData") or {})
        data.update(d.get("data") or {})
        ok(bool(data), f"{where}: has data")
        secrets[d["metadata"]["name"]] = set(data)
    for _, d, where in by_kind.get("ConfigMap", []):
        ok(bool(d.get("data")), f"{where}: has data")

    workloads = []  # (where, template labels, {port name: number}, kind)
    for kind in ("StatefulSet", "Deployment"):
        for _, d, where in by_kind.get(kind, []):
            spec = d.get("spec") or {}
            tmpl = spec.get("template") or {}
            tlabels = (tmpl.get("metadata") or {}).get("labels") or {}
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            ok(labels_match(sel, tlabels), f"{where}: selector matches the pod template labels")
            pspec = tmpl.get("spec") or {}
            psc = pspec.get("securityContext") or {}
            ok(psc.get("runAsNonRoot") is True and (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
               f"{where}: pods run as non-root with the RuntimeDefault seccomp profile")
            volumes = {}
            for v in pspec.get("volumes") or []:
                volumes[v["name"]] = v
                if "configMap" in v:
                    ok(v["configMap"].get("name") in configmaps, f"{where}: volume {v['name']} names a ConfigMap in the manifests")
                if "secret" in v:
                    sn = v["secret"].get("secretName")
                    ok(sn in secrets or sn in EXTERNAL_SECRETS, f"{where}: volume {v['name']} names a known Secret", sn)
            vcts = spec.get("volumeClaimTemplates") or []
            vct_names = [(v.get("metadata") or {}).get("name") for v in vcts]
            containers = pspec.get("containers") or []
            ok(bool(containers), f"{where}: has containers")
            ports = {}
            for c in containers:
                required = ("readinessProbe", "livenessProbe")
                ports.update(check_container(where, c, volumes, vct_names, required))
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        ok(ref.get("key") in secrets.get(ref.get("name"), set()),
                           f"{where}: env {e['name']} from Secret {ref.get('name')} key {ref.get('key')} exists")
            for ic in pspec.get("initContainers") or []:
                check_container(where + " init", ic, volumes, vct_names, ())
            workloads.append((where, tlabels, ports, kind))
            if kind == "StatefulSet":
                check_statefulset(where, spec, containers[0] if containers else {}, volumes, ports, configmaps)

    for _, d, where in by_kind.get("Service", []):
        spec = d.get("spec") or {}
        sports = spec.get("ports") or []
        ok(bool(sports) and all("port" in p for p in sports), f"{where}: has ports")
        sel = spec.get("selector") or {}
        targets = [w for w in workloads if labels_match(sel, w[1])]
        if not ok(len(targets) == 1, f"{where}: selector matches exactly one workload", f"matches {len(targets)}"):
            continue
        wports = targets[0][2]
        for p in sports:
            tp = p.get("targetPort", p.get("port"))
            ok(tp in wports or tp in wports.values(), f"{where}: targetPort {tp} is a container port of {targets[0][0]}")
        if spec.get("type") == "LoadBalancer":
            ok({587, 465} <= {p["port"] for p in sports}, f"{where}: serves 587 and 465")
            ok(spec.get("externalTrafficPolicy") == "Local" or "proxy" in json.dumps(d.get("metadata", {})).lower(),
               f"{where}: keeps client addresses (externalTrafficPolicy: Local or PROXY protocol)")
    sts = {d["metadata"]["name"]: d for _, d, _ in by_kind.get("StatefulSet", [])}
    svcs = {d["metadata"]["name"]: d for _, d, _ in by_kind.get("Service", [])}
    for name, d in sts.items():
        gov = svcs.get(d["spec"].get("serviceName"))
        ok(gov is not None and (gov["spec"].get("clusterIP") == "None"), f"StatefulSet/{name}: serviceName is a headless Service in the manifests")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for _, d, where in by_kind.get(kind, []):
            spec = d.get("spec") or {}
            sel = ((spec.get("selector") or spec.get("podSelector")) or {}).get("matchLabels") or {}
            ok(any(labels_match(sel, w[1]) for w in workloads), f"{where}: selector matches a workload")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    steps = {"toml": check_toml, "dockerfile": check_dockerfile, "compose": check_compose, "kubernetes": check_kubernetes}
    if what == "all":
        for f in steps.values():
            f()
    elif what in steps:
        steps[what]()
    elif what == "write-tomls" and len(sys.argv) == 3:
        # For check.sh: each shipped configuration to DIR/N.toml, and a
        # "DIR/N.toml<TAB>name" line for each.
        for i, (name, text) in enumerate(shipped_tomls()):
            path = os.path.join(sys.argv[2], f"{i}.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"{path}\t{name}")
        return 0
    else:
        print(__doc__)
        return 2
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
