# Each model version keeps its validation Dice per scan, so the model card can break model
# quality down by scan metadata (site, scanner, field strength, sequence, sex, age band).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("active_learning", "0004_job_heartbeat"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="validation_dice_per_scan",
            field=models.JSONField(
                default=dict,
                help_text="scan id -> (label value -> Dice) on each validation scan (breakdowns by metadata)",
            ),
        ),
    ]
