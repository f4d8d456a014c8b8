// unclip-nodes: colours for the pack's socket types, in the families of ComfyUI's own
// (text encoders yellow like CLIP, image embeddings like CLIP_VISION_OUTPUT, models like MODEL),
// so a link shows what flows along it instead of the grey every unknown type gets.
// tests/test_comfy_names.py checks this table against nodes/types.py's SOCKET_COLORS.
import { app } from "../../scripts/app.js";

const SOCKET_COLORS = {
  UNCLIP_CLIP_TEXT: "#FFD500",
  UNCLIP_CLIP_VISION: "#A8DADC",
  UNCLIP_PRIOR: "#9575CD",
  UNCLIP_DECODER: "#B39DDB",
  UNCLIP_UPSAMPLER: "#D1C4E9",
  UNCLIP_TEXT_EMBEDS: "#FFA931",
  UNCLIP_IMAGE_EMBEDS: "#AD7452",
  UNCLIP_LATENT: "#FF9CF9",
  UNCLIP_PCA: "#4DB6AC",
};

app.registerExtension({
  name: "unclip-nodes.socket-colors",
  async setup() {
    const canvas = app.canvas;
    if (canvas && canvas.default_connection_color_byType) {
      Object.assign(canvas.default_connection_color_byType, SOCKET_COLORS);
    }
    const LGraphCanvas = globalThis.LGraphCanvas || canvas?.constructor;
    if (LGraphCanvas && LGraphCanvas.link_type_colors) {
      Object.assign(LGraphCanvas.link_type_colors, SOCKET_COLORS);
    }
  },
});
