"""Unicode repair with ftfy: mojibake, broken HTML entities and odd control characters, fixed before any filter reads."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep


class UnicodeRepair(PipelineStep):
    """Run ftfy on every document and mark the ones it changed, so the report can count them."""

    type = "🔧 - FIX"
    name = "🩹 Unicode repair"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import ftfy

        for doc in data:
            with self.track_time():
                fixed = ftfy.fix_text(doc.text)
                if fixed != doc.text:
                    doc.text = fixed
                    doc.metadata["unicode_repaired"] = True
                    self.stat_update("repaired")
                self.stat_update("total")
            yield doc
