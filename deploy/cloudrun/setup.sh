#!/usr/bin/env bash
# Deploys runwarden into a control project from nothing, and can be re-run: every step looks
# before it creates, and updates what it may have created before. Run it from a checkout of the
# runwarden release you deploy (it builds that release's image once, with Cloud Build):
#
#   CONTROL_PROJECT=acme-runwarden REGION=europe-west1 GOVERNED_PROJECTS="acme-prod acme-staging" \
#   GITHUB_REPOSITORY=acme/access-policies AUTH0_CLIENT_SECRET=... deploy/cloudrun/setup.sh
#
# Parameters (environment):
#   CONTROL_PROJECT      where runwarden runs (job, secret, bucket, image, identities)   required
#   REGION               its region, e.g. europe-west1                                   required
#   GOVERNED_PROJECTS    space-separated project ids of Settings.scope                     required
#   GITHUB_REPOSITORY    OWNER/NAME of the policy repository (Workload Identity)          required
#   AUTH0_CLIENT_SECRET  the Management API client secret; read only when the secret has
#                        no enabled version yet (sent on stdin, never as an argument)
#   RUNTIME_SERVICE_ACCOUNTS  space-separated runtime service accounts of the governed
#                        services: updating a service needs iam.serviceAccounts.actAs on them
#   RUNWARDEN_VERSION    image tag (default: v + Cargo.toml's version)
#   IMAGE                the image (default: REGION-docker.pkg.dev/CONTROL_PROJECT/runwarden/
#                        runwarden:RUNWARDEN_VERSION, built here when it does not exist)
#   POLICY_BUCKET        the published policies (default: CONTROL_PROJECT-runwarden-policies)
#   RUNWARDEN_MODE       job (scheduled apply, default) or service (the loop)
#   SCHEDULE             the job's cron schedule (default: every 10 minutes)
#   NOTIFICATION_CHANNELS  comma-separated Monitoring channel names for the alert policies
#
# Every gcloud command and flag here is checked against this machine's `gcloud --help` by
# tests/run.rs (a recording stub gcloud runs this script twice: from nothing, then again).
set -euo pipefail

: "${CONTROL_PROJECT:?set CONTROL_PROJECT (the project runwarden runs in)}"
: "${REGION:?set REGION (e.g. europe-west1)}"
: "${GOVERNED_PROJECTS:?set GOVERNED_PROJECTS (space-separated project ids in Settings.scope)}"
: "${GITHUB_REPOSITORY:?set GITHUB_REPOSITORY (OWNER/NAME of the policy repository)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # deploy/
root="$(cd "$here/.." && pwd)"                             # the runwarden checkout
RUNWARDEN_VERSION="${RUNWARDEN_VERSION:-v$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)}"
IMAGE="${IMAGE:-${REGION}-docker.pkg.dev/${CONTROL_PROJECT}/runwarden/runwarden:${RUNWARDEN_VERSION}}"
POLICY_BUCKET="${POLICY_BUCKET:-${CONTROL_PROJECT}-runwarden-policies}"
RUNWARDEN_MODE="${RUNWARDEN_MODE:-job}"
SCHEDULE="${SCHEDULE:-*/10 * * * *}"
RUNTIME_SERVICE_ACCOUNTS="${RUNTIME_SERVICE_ACCOUNTS:-}"
NOTIFICATION_CHANNELS="${NOTIFICATION_CHANNELS:-}"
case "$RUNWARDEN_MODE" in job|service) ;; *) echo "RUNWARDEN_MODE must be job or service, not '$RUNWARDEN_MODE'" >&2; exit 1 ;; esac
if ! [[ "$GITHUB_REPOSITORY" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
  echo "GITHUB_REPOSITORY must be OWNER/NAME, not '$GITHUB_REPOSITORY'" >&2
  exit 1
fi

cp=(--project="$CONTROL_PROJECT")
planner="runwarden-planner@${CONTROL_PROJECT}.iam.gserviceaccount.com"
applier="runwarden-applier@${CONTROL_PROJECT}.iam.gserviceaccount.com"
publisher="runwarden-publisher@${CONTROL_PROJECT}.iam.gserviceaccount.com"
scheduler="runwarden-scheduler@${CONTROL_PROJECT}.iam.gserviceaccount.com"
secret=runwarden-auth0-client-secret
step() { printf '\n== %s\n' "$*" >&2; }
exists() { "$@" >/dev/null 2>&1; }   # a describe that succeeds: the resource is there

step "APIs"
gcloud services enable "${cp[@]}" run.googleapis.com iap.googleapis.com cloudresourcemanager.googleapis.com \
  secretmanager.googleapis.com cloudscheduler.googleapis.com artifactregistry.googleapis.com \
  cloudbuild.googleapis.com storage.googleapis.com iam.googleapis.com iamcredentials.googleapis.com \
  sts.googleapis.com logging.googleapis.com monitoring.googleapis.com
for p in $GOVERNED_PROJECTS; do
  # The governed services' own APIs: Cloud Run, and IAP where policies turn it on.
  gcloud services enable --project="$p" run.googleapis.com iap.googleapis.com
done

step "Artifact Registry repository and image $IMAGE"
if ! exists gcloud artifacts repositories describe runwarden "${cp[@]}" --location="$REGION"; then
  gcloud artifacts repositories create runwarden "${cp[@]}" --location="$REGION" --repository-format=docker \
    --description="runwarden images"
fi
if ! exists gcloud artifacts docker images describe "$IMAGE"; then
  gcloud builds submit "$root" "${cp[@]}" --config="$here/cloudbuild.yaml" --substitutions="_IMAGE=$IMAGE"
fi

step "Service accounts"
for sa in runwarden-planner runwarden-applier runwarden-publisher runwarden-scheduler; do
  if ! exists gcloud iam service-accounts describe "${sa}@${CONTROL_PROJECT}.iam.gserviceaccount.com" "${cp[@]}"; then
    gcloud iam service-accounts create "$sa" "${cp[@]}" --display-name="$sa"
  fi
done

step "Custom roles and their bindings in the governed projects"
for p in $GOVERNED_PROJECTS; do
  for role in runwardenPlanner:runwarden-planner runwardenApplier:runwarden-applier; do
    id="${role%%:*}" file="$here/iam/${role#*:}.yaml"
    if exists gcloud iam roles describe "$id" --project="$p"; then
      gcloud iam roles update "$id" --project="$p" --file="$file" --quiet   # keep it in step with the file
    else
      gcloud iam roles create "$id" --project="$p" --file="$file"
    fi
  done
  gcloud projects add-iam-policy-binding "$p" --member="serviceAccount:$planner" \
    --role="projects/$p/roles/runwardenPlanner" --condition=None --quiet >/dev/null
  gcloud projects add-iam-policy-binding "$p" --member="serviceAccount:$applier" \
    --role="projects/$p/roles/runwardenApplier" --condition=None --quiet >/dev/null
done
# services.patch needs iam.serviceAccounts.actAs on each changed service's runtime account:
# granted on those accounts only, never on the project.
for runtime in $RUNTIME_SERVICE_ACCOUNTS; do
  gcloud iam service-accounts add-iam-policy-binding "$runtime" --member="serviceAccount:$applier" \
    --role=roles/iam.serviceAccountUser --quiet >/dev/null
done

step "The Auth0 client secret (Secret Manager)"
if ! exists gcloud secrets describe "$secret" "${cp[@]}"; then
  gcloud secrets create "$secret" "${cp[@]}" --replication-policy=automatic
fi
if [ -z "$(gcloud secrets versions list "$secret" "${cp[@]}" --filter=state:ENABLED --limit=1 --format='value(name)')" ]; then
  : "${AUTH0_CLIENT_SECRET:?the secret $secret has no enabled version: set AUTH0_CLIENT_SECRET to the Management API client secret}"
  printf '%s' "$AUTH0_CLIENT_SECRET" | gcloud secrets versions add "$secret" "${cp[@]}" --data-file=-
fi
gcloud secrets add-iam-policy-binding "$secret" "${cp[@]}" --member="serviceAccount:$applier" \
  --role=roles/secretmanager.secretAccessor --condition=None --quiet >/dev/null

step "The policy bucket gs://$POLICY_BUCKET"
if ! exists gcloud storage buckets describe "gs://$POLICY_BUCKET" "${cp[@]}"; then
  gcloud storage buckets create "gs://$POLICY_BUCKET" "${cp[@]}" --location="$REGION" --uniform-bucket-level-access
fi
# The job and service read it (a Cloud Storage FUSE mount needs storage.objects.list, in
# roles/storage.objectViewer: https://cloud.google.com/storage/docs/gcsfuse-mount); only the
# merge workflow's publisher writes it.
gcloud storage buckets add-iam-policy-binding "gs://$POLICY_BUCKET" --member="serviceAccount:$applier" \
  --role=roles/storage.objectViewer >/dev/null
gcloud storage buckets add-iam-policy-binding "gs://$POLICY_BUCKET" --member="serviceAccount:$publisher" \
  --role=roles/storage.objectAdmin >/dev/null

step "GitHub Workload Identity Federation for $GITHUB_REPOSITORY"
# Pool, OIDC provider for https://token.actions.githubusercontent.com, an attribute condition on
# the repository (GitHub's issuer is shared by every repository), and roles/iam.workloadIdentityUser
# for principalSet://…/attribute.NAME/VALUE members, as in
# https://cloud.google.com/iam/docs/workload-identity-federation-with-deployment-pipelines
number="$(gcloud projects describe "$CONTROL_PROJECT" --format='value(projectNumber)')"
pool="projects/${number}/locations/global/workloadIdentityPools/github"
if ! exists gcloud iam workload-identity-pools describe github "${cp[@]}" --location=global; then
  gcloud iam workload-identity-pools create github "${cp[@]}" --location=global --display-name="GitHub Actions"
fi
# Only this repository's workflows get tokens from the provider at all.
provider_flags=(--workload-identity-pool=github --location=global
  --attribute-mapping="google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.ref=assertion.ref"
  --attribute-condition="assertion.repository == '${GITHUB_REPOSITORY}'")
if exists gcloud iam workload-identity-pools providers describe github "${cp[@]}" --workload-identity-pool=github --location=global; then
  gcloud iam workload-identity-pools providers update-oidc github "${cp[@]}" "${provider_flags[@]}"
else
  gcloud iam workload-identity-pools providers create-oidc github "${cp[@]}" "${provider_flags[@]}" \
    --issuer-uri=https://token.actions.githubusercontent.com
fi
# Pull requests plan (read-only); only runs on main apply and publish.
gcloud iam service-accounts add-iam-policy-binding "$planner" "${cp[@]}" --role=roles/iam.workloadIdentityUser \
  --member="principalSet://iam.googleapis.com/${pool}/attribute.repository/${GITHUB_REPOSITORY}" --quiet >/dev/null
for sa in "$applier" "$publisher"; do
  gcloud iam service-accounts add-iam-policy-binding "$sa" "${cp[@]}" --role=roles/iam.workloadIdentityUser \
    --member="principalSet://iam.googleapis.com/${pool}/attribute.ref/refs/heads/main" --quiet >/dev/null
done

step "runwarden as a Cloud Run $RUNWARDEN_MODE"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
render() {   # FILE: the ${VARIABLES} replaced by the parameters; an unknown one is an error
  local text
  text="$(cat "$1")"
  for name in CONTROL_PROJECT REGION IMAGE POLICY_BUCKET; do
    text="${text//\$\{$name\}/${!name}}"
  done
  if grep -q '\${' <<<"$text"; then
    echo "render: $1 has a \${...} parameter setup.sh does not know" >&2
    exit 1
  fi
  printf '%s\n' "$text" > "$rendered/$(basename "$1")"
  echo "$rendered/$(basename "$1")"
}
if [ "$RUNWARDEN_MODE" = job ]; then
  job_file="$(render "$here/cloudrun/job.yaml")"   # an assignment, so a failed render stops here
  gcloud run jobs replace "$job_file" "${cp[@]}" --region="$REGION"
  # Cloud Scheduler runs the job through the Cloud Run Admin API (jobs.run).
  gcloud run jobs add-iam-policy-binding runwarden-apply "${cp[@]}" --region="$REGION" \
    --member="serviceAccount:$scheduler" --role=roles/run.invoker --quiet >/dev/null
  schedule_flags=(--location="$REGION" --schedule="$SCHEDULE" --http-method=POST
    --uri="https://run.googleapis.com/v2/projects/${CONTROL_PROJECT}/locations/${REGION}/jobs/runwarden-apply:run"
    --oauth-service-account-email="$scheduler"
    --oauth-token-scope=https://www.googleapis.com/auth/cloud-platform)
  if exists gcloud scheduler jobs describe runwarden-apply "${cp[@]}" --location="$REGION"; then
    gcloud scheduler jobs update http runwarden-apply "${cp[@]}" "${schedule_flags[@]}"
  else
    gcloud scheduler jobs create http runwarden-apply "${cp[@]}" "${schedule_flags[@]}"
  fi
else
  service_file="$(render "$here/cloudrun/service.yaml")"
  gcloud run services replace "$service_file" "${cp[@]}" --region="$REGION"
fi

step "Log-based metrics and alert policies"
for file in "$here"/monitoring/metrics/*.yaml; do
  name="$(basename "$file" .yaml)"
  if exists gcloud logging metrics describe "$name" "${cp[@]}"; then
    gcloud logging metrics update "$name" "${cp[@]}" --config-from-file="$file"
  else
    gcloud logging metrics create "$name" "${cp[@]}" --config-from-file="$file"
  fi
done
channels=()
if [ -n "$NOTIFICATION_CHANNELS" ]; then channels=(--notification-channels="$NOTIFICATION_CHANNELS"); fi
for file in "$here"/monitoring/policies/*.yaml; do
  display="$(sed -n 's/^displayName: *//p' "$file" | head -n 1)"
  existing="$(gcloud alpha monitoring policies list "${cp[@]}" --filter="displayName=\"${display}\"" --format='value(name)' --limit=1)"
  if [ -n "$existing" ]; then
    gcloud alpha monitoring policies update "$existing" "${cp[@]}" --policy-from-file="$file"
  else
    gcloud alpha monitoring policies create "${cp[@]}" --policy-from-file="$file" "${channels[@]}"
  fi
done

step "Done"
cat >&2 <<DONE
Publish the first policy revision (until then the $RUNWARDEN_MODE has nothing to read):
  deploy/cloudrun/publish.sh $POLICY_BUCKET PATH/TO/POLICY-REPO/policies \$(git -C PATH/TO/POLICY-REPO rev-parse HEAD)
Then set these variables in $GITHUB_REPOSITORY (Settings > Secrets and variables > Actions):
  WIF_PROVIDER=${pool}/providers/github
  PLANNER_SA=$planner
  APPLIER_SA=$applier
  PUBLISHER_SA=$publisher
  POLICY_BUCKET=$POLICY_BUCKET
DONE
