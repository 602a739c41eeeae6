"""Callbacks for the training frameworks people already use: they log what report_gen's rules read.

    report_gen.integrations.lightning.ReportGenCallback   a Lightning Callback (`lightning` or `pytorch_lightning`)
    report_gen.integrations.hf.ReportGenCallback          a transformers TrainerCallback

Both drive report_gen.monitor.TrainingMonitor from the framework's hooks. Nothing here is imported by
`import report_gen`; each module imports its framework only when the callback class is first used.
"""
