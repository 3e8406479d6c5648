#!/usr/bin/env bash
# Shared set-up for scripts/test and scripts/demo: system packages when missing, then a virtual
# environment in .venv with the project and its test tools installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# SSH chacha20-poly1305 at a few microseconds a packet (bastion/ssh/chacha.py).
/sbin/ldconfig -p 2>/dev/null | grep -q 'libsodium\.so\.' || need+=(libsodium23)
if [ "${BASTION_BOOTSTRAP_TEST:-0}" = 1 ]; then
  command -v asciinema >/dev/null || need+=(asciinema)
  command -v tmux >/dev/null || need+=(tmux)
  command -v script >/dev/null || need+=(bsdutils)
  # Native database clients the tests drive through the bastion.
  command -v psql >/dev/null || need+=(postgresql-client)
  command -v pgbench >/dev/null || need+=(postgresql)  # Debian ships pgbench with the server
  command -v mariadb >/dev/null || need+=(mariadb-client)
  command -v javac >/dev/null || need+=(default-jdk-headless)
  [ -e /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
  [ -e /usr/share/java/mariadb-java-client.jar ] || need+=(libmariadb-java)
  # The load balancer in front of the cluster test's three bastions.
  [ -x /usr/sbin/haproxy ] || need+=(haproxy)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ "${BASTION_BOOTSTRAP_TEST:-0}" = 1 ]; then
  # The identity tests' OpenID provider (node-oidc-provider), from the npm registry at the
  # versions tests/oidc/package-lock.json pins.
  if [ ! -e tests/oidc/node_modules/.package-lock.json ] || \
     ! cmp -s tests/oidc/package-lock.json tests/oidc/node_modules/.installed-lock; then
    if ! command -v npm >/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
      else
        echo "missing Node.js and npm for the identity tests (e.g. sudo apt-get install nodejs npm)" >&2
        exit 1
      fi
    fi
    (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp tests/oidc/package-lock.json tests/oidc/node_modules/.installed-lock
  fi
fi
