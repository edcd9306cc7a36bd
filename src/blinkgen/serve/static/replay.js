// Replay from a PNG (issue 16): a dropped, pasted or chosen PNG that carries blinkgen's
// `parameters` text chunk (src/blinkgen/pngmeta.py: sorted JSON in a tEXt chunk; zTXt and iTXt
// are read too, as the Python reader does) fills the form with the settings it records, so
// Generate makes that image again. Any other image goes on to be the image to edit, as before;
// the banner's "Use it as the image to edit instead" button sends a blinkgen PNG there too.
// Loaded after app.js, whose globals ($, models, applyModel, parseJSON, loadEditImage,
// removeImage) it uses.
"use strict";

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const PARAMS_KEY = "parameters";
const MAX_TEXT_BYTES = 1 << 20;  // a parameters chunk is a few hundred bytes; refuse a huge one
let replayFile = null;  // the PNG whose settings are in the form (for "use it to edit instead")

async function inflate(bytes) {  // zlib stream -> bytes (zTXt, compressed iTXt)
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// The text of the first tEXt / zTXt / iTXt chunk named `parameters`, read from the chunk list
// without decoding a pixel; null when the bytes are not a PNG or have no such chunk.
async function pngTextChunk(buf, keyword = PARAMS_KEY) {
  const b = new Uint8Array(buf);
  if (b.length < 8 || PNG_SIGNATURE.some((v, i) => b[i] !== v)) return null;
  const view = new DataView(buf);
  const latin1 = new TextDecoder("latin1"), utf8 = new TextDecoder("utf-8", { fatal: true });
  let i = 8;
  while (i + 8 <= b.length) {
    const length = view.getUint32(i), type = latin1.decode(b.subarray(i + 4, i + 8));
    const body = b.subarray(i + 8, i + 8 + length);
    if (body.length < length || type === "IEND") return null;
    i += 12 + length;
    if (!["tEXt", "zTXt", "iTXt"].includes(type) || length > MAX_TEXT_BYTES) continue;
    const nul = body.indexOf(0);
    if (nul < 0 || latin1.decode(body.subarray(0, nul)) !== keyword) continue;
    const rest = body.subarray(nul + 1);
    if (type === "tEXt") return latin1.decode(rest);
    if (type === "zTXt") return latin1.decode(await inflate(rest.subarray(1)));
    // iTXt: compression flag, method, language tag \0, translated keyword \0, text (UTF-8)
    const compressed = rest[0] === 1;
    let j = rest.indexOf(0, 2);
    j = rest.indexOf(0, j + 1);
    if (j < 0) return null;
    const text = rest.subarray(j + 1);
    return utf8.decode(compressed ? await inflate(text) : text);
  }
  return null;
}

// The recorded settings of a blinkgen PNG as an object (seed kept as its digits), or null.
async function blinkgenParameters(file) {
  if (!file || file.type !== "image/png") return null;
  let text;
  try { text = await pngTextChunk(await file.arrayBuffer()); } catch (e) { return null; }
  if (text === null) return null;
  let params;
  try { params = parseJSON(text); } catch (e) { return null; }
  return params && typeof params === "object" && typeof params.prompt === "string" ? params : null;
}

async function takeImage(file) {
  const params = await blinkgenParameters(file);
  if (!params) { hideReplay(); loadEditImage(file); return; }
  fillForm(params, file);
}

// The served model that made it: the same weights hash first (a served name may differ from the
// name recorded), then the same name.
function recordedModel(params) {
  return (params.model_hash && models.find((m) => m.model_hash === params.model_hash))
    || models.find((m) => m.id === params.model) || null;
}

function fillForm(params, file) {
  const warnings = [];
  if (editImage) removeImage();  // replaying makes a fresh image from text
  const m = recordedModel(params);
  if (m) {
    $("model").value = m.id;
    applyModel();
  } else {
    warnings.push(`model ${params.model} is not loaded here: ${$("model").value} is used`);
  }
  $("prompt").value = params.prompt;
  $("negative").value = params.negative_prompt || "";
  $("seed").value = params.seed === undefined ? "" : String(params.seed);
  $("steps").value = params.steps ?? "";
  $("guidance").value = params.guidance ?? "";
  $("n").value = "1";
  if (params.sampler !== undefined) {
    if ([...$("sampler").options].some((o) => o.value === params.sampler)) $("sampler").value = params.sampler;
    else warnings.push(`sampler ${params.sampler} is not one of this model's`);
  }
  const style = params.style ?? null, modelStyle = (m && m.defaults.style) ?? null;
  if (m && style !== modelStyle) {
    warnings.push(`it was made with style ${style === null ? "none" : `"${style}"`}; this page uses the model's ` +
                  `default (${modelStyle === null ? "none" : `"${modelStyle}"`})`);
  }
  if (params.variation_seed !== undefined) {
    warnings.push(`it is a variation (seed ${params.variation_seed}, strength ${params.variation_strength}): ` +
                  "this page makes the base image; `blinkgen generate --from` makes the variation");
  }
  if (params.edit !== undefined) {
    warnings.push(`it was made by editing an image (${params.edit}): this page makes a fresh image from text`);
  }
  for (const k of ["lora", "cache", "guidance_interval"]) {
    if (params[k] !== undefined && params[k] !== null) warnings.push(`its ${k} setting is not on this page`);
  }
  if (params.negative_prompt && $("negative").disabled) warnings.push("this model takes no negative prompt");
  replayFile = file;
  $("file").value = "";  // choosing the same file again fires "change" again
  const note = `Settings of ${file.name || "the PNG"} loaded (seed ${params.seed}, ${params.steps} steps, ` +
               `${params.sampler}, guidance ${params.guidance}): Generate makes it again.`;
  $("replaynote").textContent = warnings.length ? `${note} Note: ${warnings.join("; ")}.` : note;
  $("replay").classList.toggle("warn", warnings.length > 0);
  $("replay").hidden = false;
  $("formerror").textContent = "";
}

function hideReplay() {
  replayFile = null;
  $("replay").hidden = true;
}

$("replayedit").addEventListener("click", () => { const f = replayFile; hideReplay(); loadEditImage(f); });
$("replayclose").addEventListener("click", hideReplay);
