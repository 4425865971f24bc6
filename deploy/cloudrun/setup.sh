#!/usr/bin/env bash
# One-time setup of runwarden in a control project, as gcloud commands. Read before running:
# every command is idempotent-ish and prints what it does. Requires: gcloud, a built image.
set -euo pipefail
: "${CONTROL_PROJECT:?set CONTROL_PROJECT (where the job runs)}"
: "${REGION:?set REGION (e.g. europe-west1)}"
: "${GOVERNED_PROJECTS:?set GOVERNED_PROJECTS (space-separated project ids in Settings.scope)}"
SCHEDULE="${SCHEDULE:-*/10 * * * *}"

planner="runwarden-planner@${CONTROL_PROJECT}.iam.gserviceaccount.com"
applier="runwarden-applier@${CONTROL_PROJECT}.iam.gserviceaccount.com"
scheduler="runwarden-scheduler@${CONTROL_PROJECT}.iam.gserviceaccount.com"

for sa in runwarden-planner runwarden-applier runwarden-scheduler; do
  gcloud iam service-accounts create "$sa" --project="$CONTROL_PROJECT" || true
done

for p in $GOVERNED_PROJECTS; do
  gcloud iam roles create runwardenPlanner --project="$p" --file=deploy/iam/runwarden-planner.yaml || true
  gcloud iam roles create runwardenApplier --project="$p" --file=deploy/iam/runwarden-applier.yaml || true
  gcloud projects add-iam-policy-binding "$p" --member="serviceAccount:$planner" \
    --role="projects/$p/roles/runwardenPlanner" --condition=None
  gcloud projects add-iam-policy-binding "$p" --member="serviceAccount:$applier" \
    --role="projects/$p/roles/runwardenApplier" --condition=None
done

# The Auth0 Management API client secret lives in Secret Manager, never in a file or an image.
gcloud secrets create runwarden-auth0-client-secret --project="$CONTROL_PROJECT" \
  --replication-policy=automatic || true
gcloud secrets add-iam-policy-binding runwarden-auth0-client-secret --project="$CONTROL_PROJECT" \
  --member="serviceAccount:$applier" --role=roles/secretmanager.secretAccessor

gcloud run jobs replace deploy/cloudrun/job.yaml --project="$CONTROL_PROJECT" --region="$REGION"

# Cloud Scheduler runs the job through the Cloud Run Admin API (jobs.run) every few minutes.
gcloud run jobs add-iam-policy-binding runwarden-apply --project="$CONTROL_PROJECT" --region="$REGION" \
  --member="serviceAccount:$scheduler" --role=roles/run.invoker
gcloud scheduler jobs create http runwarden-apply --project="$CONTROL_PROJECT" --location="$REGION" \
  --schedule="$SCHEDULE" --http-method=POST \
  --uri="https://run.googleapis.com/v2/projects/${CONTROL_PROJECT}/locations/${REGION}/jobs/runwarden-apply:run" \
  --oauth-service-account-email="$scheduler" \
  --oauth-token-scope=https://www.googleapis.com/auth/cloud-platform
