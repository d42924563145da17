# Scan metadata: site and scanner identifiers, field strength, sequence, sex and age band
# (labeling/metadata.py validates them; empty: not recorded).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0007_rework_and_comments"),
    ]

    operations = [
        migrations.AddField(
            model_name="scan",
            name="site",
            field=models.CharField(blank=True, help_text="short identifier of the site", max_length=64),
        ),
        migrations.AddField(
            model_name="scan",
            name="scanner",
            field=models.CharField(blank=True, help_text="short identifier of the scanner model", max_length=64),
        ),
        migrations.AddField(
            model_name="scan",
            name="field_strength",
            field=models.FloatField(blank=True, help_text="tesla", null=True),
        ),
        migrations.AddField(
            model_name="scan",
            name="sequence",
            field=models.CharField(blank=True, help_text="T1w, T2w, FLAIR, PD or other", max_length=8),
        ),
        migrations.AddField(
            model_name="scan",
            name="sex",
            field=models.CharField(blank=True, help_text="F, M, other or unknown", max_length=8),
        ),
        migrations.AddField(
            model_name="scan",
            name="age_band",
            field=models.CharField(blank=True, help_text="18-29, 30-39, ... 80+, 0-17 or unknown", max_length=8),
        ),
    ]
