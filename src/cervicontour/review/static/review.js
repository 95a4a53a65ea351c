// cervicontour review page: NiiVue viewer + decisions. Everything is served by the local server.
const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("cervicontour-token") || "";
sessionStorage.setItem("cervicontour-token", token);
if (params.has("token")) history.replaceState(null, "", location.pathname); // keep the token out of the address bar
const headers = { "X-Review-Token": token };
const WINDOWS = { soft: [-160, 240], bone: [-500, 1300] };

// What tests and the benchmark read (window.review): timings and the viewer's state.
const state = (window.review = { t0: performance.now(), firstView: null, fullLoaded: null, caseId: null, masks: [], nv: null, error: null });
const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers, "Content-Type": "application/json", ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

let Niivue = null, NVImage = null, SLICE = null, SHOW_RENDER = null, DRAG = null;
try {
  ({ Niivue, NVImage, SLICE_TYPE: SLICE, SHOW_RENDER, DRAG_MODE: DRAG } = await import("/static/vendor/niivue.js"));
} catch (error) {
  $("no-viewer").hidden = false;
  state.error = `viewer not built: ${error}`;
}

let nv = null;
let windowHU = WINDOWS.soft;

function hexToRgb(hex) { return [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16)); }

function colormapFor(mask) {
  const key = `cc_${mask.colour.slice(1)}`;
  const [r, g, b] = hexToRgb(mask.colour);
  nv.addColormap(key, { R: [0, r], G: [0, g], B: [0, b], A: [0, 255], I: [0, 255] });
  return key;
}

const ctUrl = (id, preview) => `/api/cases/${encodeURIComponent(id)}/${preview ? "ct-preview.nii" : "ct.nii.gz"}`;
const maskUrl = (id, mask, preview) => `/api/cases/${encodeURIComponent(id)}/${preview ? "preview" : "masks"}/${mask.id}${preview ? ".preview.nii" : ""}`;

function volumeList(caseId, masks, preview) {
  return [
    { url: ctUrl(caseId, preview), name: preview ? "ct-preview.nii" : "ct.nii.gz", headers, colormap: "gray", cal_min: windowHU[0], cal_max: windowHU[1], trustCalMinMax: true },
    ...masks.map((m) => ({ url: maskUrl(caseId, m, preview), name: `${m.name}${preview ? ".nii" : ".nii.gz"}`, headers,
      colormap: colormapFor(m), cal_min: 0, cal_max: 1, trustCalMinMax: true, opacity: m.visible ? m.opacity : 0 })),
  ];
}

async function showVolumes(caseId, masks, afterFirstView = () => {}) {
  if (!nv) return;
  const generation = (state.generation = (state.generation || 0) + 1);
  const current = () => state.caseId === caseId && state.generation === generation;
  const started = performance.now();
  state.fullLoaded = null;
  $("resolution").textContent = "preview";
  const preview = await Promise.all(volumeList(caseId, masks, true).map((v) => NVImage.loadFromUrl(v)));
  if (!current()) return;
  state.previewFetchedSinceNavigation = performance.now();
  swapIn(preview, masks);
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))); // drawn and presented
  state.firstView = performance.now() - started;
  afterFirstView();
  state.firstViewSinceNavigation = performance.now(); // ms since the page was requested
  status(`first view in ${(state.firstView / 1000).toFixed(2)} s (downsampled preview); loading full resolution…`);
  // full resolution in the background, swapped in when every volume has arrived
  const full = await Promise.all(volumeList(caseId, masks, false).map((v) => NVImage.loadFromUrl(v)));
  if (!current()) return;
  swapIn(full, masks);
  state.fullLoaded = performance.now() - started;
  state.fullLoadedSinceNavigation = performance.now();
  $("resolution").textContent = "full resolution";
  status(`first view ${(state.firstView / 1000).toFixed(2)} s; full resolution ${(state.fullLoaded / 1000).toFixed(2)} s`);
}

// Show `images` (CT first, then one per mask) at once: one texture update instead of one per volume.
function swapIn(images, masks) {
  masks.forEach((m, i) => { images[i + 1].opacity = m.visible ? m.opacity : 0; });
  images[0].cal_min = windowHU[0];
  images[0].cal_max = windowHU[1];
  const first = !nv.back;
  nv.volumes = images;
  nv.back = images[0];
  nv.overlays = images.slice(1);
  if (first) nv.setVolume(images[0], 0); // sets up the scene (crosshair at the centre) for the first image
  nv.updateGLVolume();
  nv.drawScene();
}

function setWindow(name) {
  windowHU = WINDOWS[name];
  if (!nv || !nv.volumes.length) return;
  nv.volumes[0].cal_min = windowHU[0];
  nv.volumes[0].cal_max = windowHU[1];
  nv.updateGLVolume();
}

function setView(name) {
  if (!nv) return;
  const types = { axial: SLICE.AXIAL, coronal: SLICE.CORONAL, sagittal: SLICE.SAGITTAL, multiplanar: SLICE.MULTIPLANAR, render: SLICE.RENDER };
  // the 3-D pane is costly without a GPU: multiplanar shows the three planes; "3-D" is its own view
  nv.opts.multiplanarShowRender = name === "multiplanar3d" ? SHOW_RENDER.ALWAYS : SHOW_RENDER.NEVER;
  nv.setSliceType(types[name] ?? SLICE.MULTIPLANAR);
}

function refreshOpacity(index) {
  const mask = state.masks[index];
  if (nv && nv.volumes.length > index + 1) nv.setOpacity(index + 1, mask.visible ? mask.opacity : 0);
}

function renderStructures(masks) {
  const body = $("structures").querySelector("tbody");
  body.innerHTML = "";
  masks.forEach((m, i) => {
    const row = document.createElement("tr");
    row.dataset.mask = m.id;
    const flag = m.review_closely ? `<span class="flag" title="review closely">⚠ review closely</span><div class="reasons">${m.reasons.map(escape).join("; ")}</div>` : "";
    row.innerHTML = `
      <td><input type="checkbox" class="visible" ${m.visible ? "checked" : ""} aria-label="show ${escape(m.name)}"></td>
      <td><span class="swatch" style="background:${m.colour}"></span>${escape(m.name)} <small>${m.kind === "draft" ? "" : escape(m.kind)}</small>${flag}</td>
      <td><input type="range" class="opacity" min="0" max="1" step="0.05" value="${m.opacity}"></td>
      <td>${m.volume_cc ?? ""}</td><td>${m.uncertainty ?? ""}</td>
      <td><select class="decision"><option value="">—</option><option>accept</option><option>reject</option><option>needs-edit</option></select></td>
      <td><input class="comment" placeholder="comment"></td>`;
    row.querySelector(".visible").addEventListener("change", (e) => { m.visible = e.target.checked; refreshOpacity(i); });
    row.querySelector(".opacity").addEventListener("input", (e) => { m.opacity = Number(e.target.value); refreshOpacity(i); });
    body.appendChild(row);
  });
}

function escape(text) { return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }

function renderCompose(parts) {
  const box = $("compose");
  box.innerHTML = "";
  for (const [target, list] of Object.entries(parts)) {
    const line = document.createElement("div");
    line.innerHTML = `<strong>${target}</strong>: ` + list.map((p) =>
      `<label class="${p.present ? "" : "missing"}"><input type="checkbox" data-target="${target}" value="${p.name}" ${p.present ? "" : "disabled"}> ${p.name}</label>`).join(" ");
    box.appendChild(line);
  }
}

function renderScope(summary) {
  // out-of-scope anatomy and an unreadable review log are said first, in words, for this case only
  const lines = [];
  if ((summary.out_of_scope || []).length) lines.push(`<strong>Outside what this model was made for:</strong> ${summary.out_of_scope.map(escape).join("; ")}`);
  if (summary.log_error) lines.push(`<strong>Review log unreadable:</strong> ${escape(summary.log_error)}`);
  $("scope").innerHTML = lines.map((l) => `<div>${l}</div>`).join("");
  $("scope").hidden = !lines.length;
}

function renderLog(entries) {
  $("log").innerHTML = entries.map((e) => `<li>${escape(e.timestamp)} — ${escape(e.reviewer)}: ${escape(e.action)} ${
    e.structures ? escape(Object.entries(e.structures).map(([k, v]) => `${v.name || k}: ${v.decision || "exported"}`).join(", ")) : ""}${
    e.compositions ? escape(e.compositions.map((c) => `${c.target} = ${c.used.join(" ∪ ")}`).join("; ")) : ""}${
    e.action === "edit" ? escape(`${e.structure} with ${e.tool} on axial slice ${e.slice.k}: +${e.added} / −${e.removed} voxels → ${e.id}`) : ""}</li>`).join("");
}

async function loadFindings(caseId) {
  $("findings").innerHTML = "<li>checking the rules…</li>";
  try {
    const { findings } = await api(`/api/cases/${encodeURIComponent(caseId)}/findings`);
    if (state.caseId !== caseId) return;
    $("findings").innerHTML = findings.length ? findings.map((f) =>
      `<li class="severity-${escape(f.severity)}"><strong>${escape(f.severity)}</strong> ${escape(f.structure || "")} — ${escape(f.check)}: expected ${escape(f.expected)}, found ${escape(f.actual)}. <em>${escape(f.hint)}</em></li>`).join("")
      : "<li>every rule holds</li>";
  } catch (error) { $("findings").innerHTML = `<li class="severity-error">${escape(error.message)}</li>`; }
}

async function openCase(caseId) {
  state.caseId = caseId;
  state.firstView = state.fullLoaded = null;
  const summary = await api(`/api/cases/${encodeURIComponent(caseId)}`);
  state.summary = summary;
  // sub-structures are the CTV components (compose panel), not overlays: dozens of volumes would slow the viewer
  state.masks = summary.masks.filter((m) => m.kind !== "sub").map((m) => ({ ...m, visible: true, opacity: 0.5 }));
  renderStructures(state.masks);
  await dropProposal({ discard: false });
  renderCorrect(state.masks);
  renderCompose(summary.parts);
  renderLog(summary.log);
  renderScope(summary);
  $("rtstruct").hidden = !summary.ct; // a NIfTI CT goes out as the case's CT/ series with it
  const m = summary.model || {}, inp = summary.input || {};
  $("provenance").innerHTML = `<div>${escape(summary.disclaimer)}</div><div>model ${escape(m.name ?? "?")} ${escape(m.version ?? "")} (config ${escape((m.config_sha256 || "").slice(0, 12))})</div>
    <div>input ${escape(inp.path ?? "?")} — ${escape((inp.shape || []).join("×"))} voxels, ${escape((inp.spacing_mm || []).map((v) => v.toFixed(2)).join(" × "))} mm, ${escape(inp.orientation ?? "")}</div>
    <div>rule changes at prediction: ${summary.rule_changes.length}</div>`;
  // the rule check reads every full-size mask: started once the first view is on screen, not before
  if (summary.ct) await showVolumes(caseId, state.masks, () => loadFindings(caseId));
  else loadFindings(caseId);
}

async function saveDecisions() {
  const decisions = {};
  for (const row of $("structures").querySelectorAll("tbody tr")) {
    const decision = row.querySelector(".decision").value;
    if (decision) decisions[row.dataset.mask] = { decision, comment: row.querySelector(".comment").value };
  }
  try {
    const { entry } = await api(`/api/cases/${encodeURIComponent(state.caseId)}/decisions`, { method: "POST", body: JSON.stringify({ reviewer: $("reviewer").value, decisions }) });
    status(`saved ${Object.keys(entry.structures).length} decision(s) to review.json`);
    renderLog((await api(`/api/cases/${encodeURIComponent(state.caseId)}/review`)).entries);
  } catch (error) { status(`not saved: ${error.message}`); }
}

async function composeChosen() {
  const choices = {};
  for (const box of $("compose").querySelectorAll("input:checked")) (choices[box.dataset.target] ||= []).push(box.value);
  try {
    const { compositions } = await api(`/api/cases/${encodeURIComponent(state.caseId)}/compose`, { method: "POST", body: JSON.stringify({ reviewer: $("reviewer").value, choices }) });
    $("compose-result").innerHTML = compositions.map((c) => `<div>${c.target} = ${c.used.map(escape).join(" ∪ ")}: ${c.volume_cc} cc</div>`).join("");
    await refreshMasks(compositions.map((c) => ({ name: c.target, id: c.id })));
    status(`composed ${compositions.map((c) => c.target).join(", ")}`);
  } catch (error) { status(`not composed: ${error.message}`); }
}

// Re-read the case's masks after the page wrote new ones; each of `replacing` ({name, id}) hides
// the other masks of its name on screen. Decisions already chosen in the table are kept.
async function refreshMasks(replacing) {
  const selected = new Map([...$("structures").querySelectorAll("tbody tr")].map((r) => [r.dataset.mask, [r.querySelector(".decision").value, r.querySelector(".comment").value]]));
  const summary = await api(`/api/cases/${encodeURIComponent(state.caseId)}`);
  const before = new Map(state.masks.map((m) => [m.id, m]));
  state.masks = summary.masks.filter((m) => m.kind !== "sub").map((m) => before.get(m.id) || { ...m, visible: true, opacity: 0.6 });
  for (const r of replacing) for (const m of state.masks) if (m.name === r.name && m.id !== r.id) m.visible = false;
  renderStructures(state.masks);
  renderCorrect(state.masks);
  for (const row of $("structures").querySelectorAll("tbody tr")) {
    const [decision, comment] = selected.get(row.dataset.mask) || ["", ""];
    row.querySelector(".decision").value = decision; row.querySelector(".comment").value = comment;
  }
  renderLog(summary.log);
  if (!nv) return;
  if (state.fullLoaded === null) await showVolumes(state.caseId, state.masks); // still streaming: start over with the new list
  else {
    // add only the new masks (full resolution: they are small), keep what is loaded
    for (const [i, m] of state.masks.entries()) {
      if (before.has(m.id)) { refreshOpacity(i); continue; }
      const [spec] = volumeList(state.caseId, [m], false).slice(1);
      nv.addVolume(await NVImage.loadFromUrl(spec));
    }
  }
}

// --- box correction: drag a box on an axial slice, LiteMedSAM proposes, the clinician accepts or discards
const correction = (state.correction = { on: false, busy: false, proposal: null, volume: null });

function renderCorrect(masks) {
  const chosen = $("medsam-mask").value;
  $("medsam-mask").innerHTML = masks.map((m) => `<option value="${escape(m.id)}">${escape(m.name)}${m.kind === "draft" ? "" : ` (${escape(m.kind)})`}</option>`).join("");
  if (masks.some((m) => m.id === chosen)) $("medsam-mask").value = chosen;
}

function setBoxMode(on) {
  correction.on = on && !!nv;
  $("medsam-box").setAttribute("aria-pressed", String(correction.on));
  $("medsam-box").textContent = correction.on ? "Box mode on: drag a box on an axial slice" : "Draw a box";
  if (nv) nv.opts.dragModePrimary = correction.on ? DRAG.callbackOnly : DRAG.crosshair;
}

async function dropProposal({ discard }) {
  const { proposal, volume } = correction;
  correction.proposal = correction.volume = null;
  $("medsam-proposal").hidden = true;
  if (nv && volume && nv.volumes.includes(volume)) nv.removeVolume(volume);
  if (discard && proposal) await api(`/api/cases/${encodeURIComponent(state.caseId)}/medsam/discard`, { method: "POST", body: JSON.stringify({ proposal: proposal.id }) });
}

async function proposeBox(drag) {
  if (!correction.on || correction.busy) return;
  if (drag.axCorSag !== SLICE.AXIAL) { status("draw the box on an axial slice (View: Axial, or the axial pane)"); return; }
  correction.busy = true;
  status("MedSAM is segmenting the box…");
  try {
    await dropProposal({ discard: true });
    const caseId = state.caseId;
    const record = await api(`/api/cases/${encodeURIComponent(caseId)}/medsam/propose`, { method: "POST", body: JSON.stringify({
      mask: $("medsam-mask").value, start_mm: Array.from(drag.mmStart).slice(0, 3), end_mm: Array.from(drag.mmEnd).slice(0, 3) }) });
    const volume = await NVImage.loadFromUrl({ url: `/api/cases/${encodeURIComponent(caseId)}/proposals/${encodeURIComponent(record.id)}.nii.gz`,
      name: `${record.id}.nii.gz`, headers, colormap: colormapFor({ colour: "#00ffff" }), cal_min: 0, cal_max: 1, trustCalMinMax: true, opacity: 0.85 });
    if (state.caseId !== caseId) return;
    nv.addVolume(volume);
    Object.assign(correction, { proposal: record, volume });
    $("medsam-info").textContent = `${record.name}, axial slice ${record.slice.k} (z ${record.slice.z_mm} mm): ${record.voxels} voxels in the box; accepting adds ${record.added} and removes ${record.removed} voxels`;
    $("medsam-proposal").hidden = false;
    status(`MedSAM proposal ready in ${record.seconds} s (cyan): accept it into the draft or discard it`);
  } catch (error) { status(`no proposal: ${error.message}`); } finally { correction.busy = false; }
}

async function acceptProposal() {
  const record = correction.proposal;
  if (!record) return;
  try {
    const { entry } = await api(`/api/cases/${encodeURIComponent(state.caseId)}/medsam/accept`, { method: "POST", body: JSON.stringify({ proposal: record.id, reviewer: $("reviewer").value }) });
    await dropProposal({ discard: false });
    await refreshMasks([{ name: entry.structure, id: entry.id }]);
    $("medsam-mask").value = entry.id; // the next box corrects the edited mask
    status(`accepted into ${entry.id} (+${entry.added} / −${entry.removed} voxels on slice ${entry.slice.k}); logged`);
  } catch (error) { status(`not accepted: ${error.message}`); }
}

async function exportRtstruct() {
  try {
    const result = await api(`/api/cases/${encodeURIComponent(state.caseId)}/rtstruct`, { method: "POST", body: JSON.stringify({ reviewer: $("reviewer").value }) });
    status(`RTSTRUCT written: ${result.path} (${result.rois.join(", ")})`);
  } catch (error) { status(`not exported: ${error.message}`); }
}

async function main() {
  if (Niivue) {
    nv = new Niivue({ isRadiologicalConvention: true, backColor: [0, 0, 0, 1], show3Dcrosshair: false, isColorbar: false, loadingText: "loading", multiplanarShowRender: SHOW_RENDER.NEVER });
    await nv.attachToCanvas($("viewer"));
    nv.setSliceType(SLICE.MULTIPLANAR);
    nv.onDragRelease = (drag) => { proposeBox(drag); };
    state.nv = nv;
  }
  document.querySelectorAll("[data-window]").forEach((b) => b.addEventListener("click", () => setWindow(b.dataset.window)));
  document.querySelectorAll("[data-view]").forEach((b) => b.addEventListener("click", () => setView(b.dataset.view)));
  $("save").addEventListener("click", saveDecisions);
  $("compose-go").addEventListener("click", composeChosen);
  $("rtstruct").addEventListener("click", exportRtstruct);
  $("medsam-box").addEventListener("click", () => setBoxMode(!correction.on));
  $("medsam-accept").addEventListener("click", acceptProposal);
  $("medsam-discard").addEventListener("click", () => dropProposal({ discard: true }).then(() => status("proposal discarded")).catch((e) => status(`not discarded: ${e.message}`)));
  $("medsam-box").disabled = !nv;
  const { cases } = await api("/api/cases");
  $("case").innerHTML = cases.map((c) => `<option value="${escape(c.patient_id)}">${escape(c.patient_id)}${c.review_closely.length ? " ⚠" : ""}${(c.out_of_scope || []).length ? " (outside the model's scope)" : ""}${c.log_error ? " (review log unreadable)" : ""}</option>`).join("");
  $("case").addEventListener("change", (e) => openCase(e.target.value));
  if (cases.length) await openCase(cases[0].patient_id);
  else status("no cases in this output folder");
}

main().catch((error) => { state.error = String(error); status(`error: ${error.message}`); });
