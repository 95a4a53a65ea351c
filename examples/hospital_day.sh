#!/usr/bin/env bash
# The hospital's day on a synthetic five-label cohort, command by command (`make demo-fit` runs this).
#
#   bash examples/hospital_day.sh [OUT]        OUT: $DEMO_FIT_DIR, else out/demo-fit
#
# Every command is printed before it runs, with what it writes. A phantom cohort stands in for the
# hospital's: labelled patients with the five compound masks only (Bladder, Anorectum, CTVn, CTVp,
# Parametrium; no parts), plus unlabelled hold-out patients, the new patients of the day.
# Knobs (environment): DEMO_FIT_BUDGET_MINUTES (fit's wall-time budget, default 5), DEMO_FIT_PATIENTS
# (labelled patients, default 10), DEMO_FIT_SEED (default 2026). OUT is removed first only when an
# earlier run of this script made it (OUT/.hospital_day); any other non-empty OUT is refused.
set -euo pipefail

OUT=${1:-${DEMO_FIT_DIR:-out/demo-fit}}
BUDGET=${DEMO_FIT_BUDGET_MINUTES:-5}
PATIENTS=${DEMO_FIT_PATIENTS:-10}
SEED=${DEMO_FIT_SEED:-2026}

if [ -e "$OUT/.hospital_day" ]; then
  rm -rf "$OUT"
elif [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  echo "error: $OUT exists and was not made by $0; choose a new folder (DEMO_FIT_DIR=...)" >&2
  exit 2
fi
mkdir -p "$OUT"
touch "$OUT/.hospital_day"

# run WRITES COMMAND...: print the command (bold on a terminal) and what it writes, then run it
BOLD='' PLAIN=''
if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; fi
run() {
  local writes=$1
  shift
  printf '\n%s$ %s%s\n  -> %s\n' "$BOLD" "$*" "$PLAIN" "$writes"
  "$@"
}

# hold-out patients: the cohort's last two (unlabelled, "CT only" in notes.csv)
FIRST_NEW=$(printf 'SYN%03d' $((PATIENTS + 1)))
SECOND_NEW=$(printf 'SYN%03d' $((PATIENTS + 2)))

run "$OUT/hospital/: $PATIENTS labelled patients (five masks each) + 2 unlabelled hold-out CTs ($FIRST_NEW, $SECOND_NEW), notes.csv" \
  cervicontour synth "$OUT/hospital" --patients "$PATIENTS" --holdout 2 --seed "$SEED" --primary-only
run "the findings in the terminal, $OUT/validation.html, $OUT/validation.json (exit 1 on errors stops the day)" \
  cervicontour validate "$OUT/hospital" --html "$OUT/validation.html" --json "$OUT/validation.json"
run "$OUT/clean/ (a cohort: grids, binary masks, names, blank header text) + changes.csv" \
  cervicontour clean "$OUT/hospital" "$OUT/clean"
run "$OUT/model/: model.pt, card.md, card.json, fit.json (a fit is paid once per hospital)" \
  cervicontour fit "$OUT/clean" --out "$OUT/model" --budget-minutes "$BUDGET"
run "$OUT/drafts/<id>/: structures/ (+ sub/ parts), prediction.json, CT/ (the NIfTI CT as DICOM), RS.dcm, report/" \
  cervicontour predict "$OUT/clean" --out "$OUT/drafts" --model "$OUT/model" --rtstruct --report
run "$OUT/drafts/$FIRST_NEW/structures/CTVn.nii.gz (her physician extends CTVn to the para-aortic nodes; the old one in history/, compose_log.jsonl)" \
  cervicontour compose "$OUT/drafts/$FIRST_NEW" --ctvn LN_Pelvic,LN_CommonIliac,LN_ParaAortic --who demo
run "$OUT/drafts/$FIRST_NEW/RS_final.dcm, on the series in CT/, for the planning system" \
  cervicontour rtstruct export --series "$OUT/drafts/$FIRST_NEW/CT" --masks "$OUT/drafts/$FIRST_NEW" --out "$OUT/drafts/$FIRST_NEW/RS_final.dcm"
run "$OUT/test/: 2 labelled patients the fit never saw (another seed), five masks each" \
  cervicontour synth "$OUT/test" --patients 2 --seed $((SEED + 1)) --primary-only
run "$OUT/test_drafts/<id>/ (the drafts to score)" \
  cervicontour predict "$OUT/test" --all --out "$OUT/test_drafts" --model "$OUT/model"
run "$OUT/test_metrics.csv, test_metrics_summary.csv, test_report.html (surface Dice at 6 mm: these phantoms' slices are ~5.5 mm apart)" \
  cervicontour evaluate --pred "$OUT/test_drafts" --ref "$OUT/test" --out "$OUT/test_metrics.csv" --html "$OUT/test_report.html" --tolerance-mm 6

cat <<EOF

The day's outputs, in $OUT:
  model card            $OUT/model/card.md   (validation Dice per structure, what the fit chose, its limits)
  drafts for review     $OUT/drafts/<id>/    (per-case QA report: report/index.html)
  for the planning system  $OUT/drafts/<id>/CT/ + RS.dcm   ($FIRST_NEW: RS_final.dcm after the parts were chosen)
  evaluation            $OUT/test_report.html, $OUT/test_metrics_summary.csv
Review the drafts in a browser (accept/reject, recompose CTVs, export the accepted set as RTSTRUCT):
  cervicontour review $OUT/drafts
  (prints http://127.0.0.1:PORT/?token=...; open that link on this machine, Ctrl+C to stop)
EOF
