#!/usr/bin/env bash
# Runs every Go fuzz target in the repository for FUZZTIME each (default
# 10s). A crash fails the run, and go test saves the input under the
# package's testdata/fuzz, where it becomes a regression test for plain
# `go test` once committed.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg=./$(dirname "${file#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
    echo "fuzz: $pkg $target ($FUZZTIME)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/metabind-fuzz.log 2>&1 || { cat /tmp/metabind-fuzz.log; exit 1; }
  done
done
