from django.core.management.base import BaseCommand

from mriannot.storage import files_cleanup


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


class Command(BaseCommand):
    help = (
        "Remove temporary files of interrupted writes, files on storage that no row names (scans, "
        "revisions, consensus maps, ground truths, model weights, pre-labels, exports) and upload "
        "leftovers, once older than --older-than. A file a row names is never removed. Run by the "
        "launcher at start; safe to schedule."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            default=3600.0,
            metavar="SECONDS",
            help="leave younger files alone: a write may still be in progress (default: 3600)",
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")

    def handle(self, *args, older_than: float, dry_run: bool, **options):
        report = files_cleanup(older_than_s=older_than, dry_run=dry_run)
        verb = "Would remove" if dry_run else "Removed"
        for kind, names in sorted(report.removed.items()):
            self.stdout.write(f"{verb} {len(names)} {kind} file(s), {_size(report.bytes[kind])}")
            if options["verbosity"] > 1:
                for name in names:
                    self.stdout.write(f"  {name}")
        for name in report.failed:
            self.stderr.write(f"Could not remove {name}")
        if not report.removed:
            self.stdout.write(f"Nothing to remove (older than {older_than:g} s).")
