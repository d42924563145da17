# The pre-label policy replaces al_offer_prelabels (True -> offered, False -> off), and every
# label gets a number key (1-9) for the viewer: existing labels get 1, 2, ... in value order,
# which is the order the viewer bound them to before.

import django.core.validators
from django.db import migrations, models


def prelabel_policy_from_boolean(apps, schema_editor):
    Project = apps.get_model("labeling", "Project")
    Project.objects.filter(al_offer_prelabels=True).update(prelabel_policy="offered")
    Project.objects.filter(al_offer_prelabels=False).update(prelabel_policy="off")


def prelabel_boolean_from_policy(apps, schema_editor):
    Project = apps.get_model("labeling", "Project")
    Project.objects.filter(prelabel_policy="off").update(al_offer_prelabels=False)
    Project.objects.exclude(prelabel_policy="off").update(al_offer_prelabels=True)


def label_keys_in_value_order(apps, schema_editor):
    LabelClass = apps.get_model("labeling", "LabelClass")
    project_ids = LabelClass.objects.values_list("project_id", flat=True).distinct()
    for project_id in project_ids:
        labels = LabelClass.objects.filter(project_id=project_id).order_by("value")[:9]
        for key, label in enumerate(labels, start=1):
            LabelClass.objects.filter(pk=label.pk).update(key=key)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0005_api_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="prelabel_policy",
            field=models.CharField(
                choices=[
                    ("off", "Off: no pre-label is shown"),
                    ("offered", "Offered: the rater chooses blank or the model"),
                    ("applied", "Applied: the viewer starts from the model"),
                ],
                default="offered",
                help_text="What the viewer does with the model's pre-label: off, offered (the rater chooses) or applied.",
                max_length=16,
            ),
        ),
        migrations.RunPython(prelabel_policy_from_boolean, prelabel_boolean_from_policy),
        migrations.RemoveField(
            model_name="project",
            name="al_offer_prelabels",
        ),
        migrations.AddField(
            model_name="labelclass",
            name="key",
            field=models.PositiveSmallIntegerField(
                blank=True,
                help_text="The number key (1-9) that picks this label in the viewer; empty: none.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(9),
                ],
            ),
        ),
        migrations.RunPython(label_keys_in_value_order, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="labelclass",
            constraint=models.UniqueConstraint(fields=("project", "key"), name="label_key_unique_in_project"),
        ),
    ]
