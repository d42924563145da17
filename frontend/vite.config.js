// Vite builds the three pages (log-in, worklist, viewer) from src/ into dist/.
// Django serves the HTML from dist/ (frontend/views.py) and the assets as static files
// under /static/ (STATICFILES_DIRS includes frontend/dist; whitenoise in production).
import { resolve } from "node:path";
import { defineConfig } from "vite";

const src = resolve(import.meta.dirname, "src");

export default defineConfig({
  root: src,
  base: "/static/",
  publicDir: false,
  build: {
    outDir: resolve(import.meta.dirname, "dist"),
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 4096, // NiiVue is one large module; it is cached after the first visit
    rollupOptions: {
      input: {
        login: resolve(src, "login.html"),
        worklist: resolve(src, "worklist.html"),
        annotate: resolve(src, "annotate.html"),
        // the lead and admin pages: agreement dashboard, scan review, dataset exports
        dashboard: resolve(src, "dashboard.html"),
        review: resolve(src, "review.html"),
        exports: resolve(src, "exports.html"),
        // a lead's project pages: projects list, project home, settings, people
        projects: resolve(src, "projects.html"),
        project: resolve(src, "project.html"),
        "project-settings": resolve(src, "project-settings.html"),
        "project-people": resolve(src, "project-people.html"),
        // the Scans page: uploads, the scan table, splits, metadata
        scans: resolve(src, "scans.html"),
      },
    },
  },
});
