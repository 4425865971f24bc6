#!/usr/bin/env bash
# Publishes a policy tree at a commit to the bucket the Cloud Run job and service mount at
# /policies (the layout runwarden reads: src/published.rs). The merge workflow runs it after the
# reviewed plan was applied; run it by hand once to publish the first revision:
#
#   deploy/cloudrun/publish.sh BUCKET POLICY_DIR COMMIT
#
# Cloud Storage has no write that covers several objects at once, so the tree goes under its own
# prefix first (revisions/COMMIT/, with a REVISION file) and CURRENT switches to it in one
# single-object write, last: a reader sees the old commit or the new one, never a mix.
set -euo pipefail
usage="usage: publish.sh BUCKET POLICY_DIR COMMIT"
bucket=${1:?$usage}
dir=${2:?$usage}
commit=${3:?$usage}
if ! [[ "$commit" =~ ^[0-9A-Za-z_-][0-9A-Za-z._-]{0,127}$ ]]; then
  echo "publish.sh: '$commit' is not a revision name (letters, digits, '.', '_', '-'); pass the commit SHA" >&2
  exit 1
fi
if [ ! -d "$dir" ]; then
  echo "publish.sh: $dir is not a directory; pass the policy directory of the checkout" >&2
  exit 1
fi
dest="gs://${bucket}/revisions/${commit}"
echo "publishing $dir at $commit to $dest" >&2
# Hidden files (.git, editor backups) are not policies.
gcloud storage rsync "$dir" "$dest" --recursive --delete-unmatched-destination-objects '--exclude=(^|.*/)\..*'
printf '%s\n' "$commit" | gcloud storage cp - "$dest/REVISION"
printf '%s\n' "$commit" | gcloud storage cp - "gs://${bucket}/CURRENT"
echo "gs://${bucket}/CURRENT now names $commit" >&2
