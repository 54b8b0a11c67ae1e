#!/bin/sh
# The shell baseline of one job: what the runner's git steps amount to, done by hand.
# Usage: shell_job.sh REPO_URL WORK_DIR BRANCH (credentials and CA come from the environment).
set -eu
url=$1 dir=$2 branch=$3
git clone --quiet --branch main "$url" "$dir"
cd "$dir"
git checkout --quiet -b "$branch"
printf '# Repobox\n\nA test file.\n' > .repobox-test.md
git add .repobox-test.md
git commit --quiet -m "Add a test file"
git push --quiet origin "$branch"
cd / && rm -rf "$dir"
