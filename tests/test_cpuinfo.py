"""The CPU description that kernel builds and the dense-product choice depend on."""

from bioxlstm import cpuinfo


def test_vendor_and_flags_come_from_proc_cpuinfo(monkeypatch):
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
            "flags\t\t: fpu avx2 avx512f amx_bf16\n\n")
    monkeypatch.setattr(cpuinfo, "_cpuinfo", lambda: text)
    assert cpuinfo.cpu_vendor() == "GenuineIntel"
    assert cpuinfo.cpu_model() == "Intel(R) Xeon(R) Processor"
    assert cpuinfo.cpu_flags() == {"fpu", "avx2", "avx512f", "amx_bf16"}


def test_unreadable_cpuinfo_means_unknown(monkeypatch):
    monkeypatch.setattr(cpuinfo, "_cpuinfo", lambda: "")
    assert cpuinfo.cpu_vendor() == cpuinfo.cpu_model() == "" and cpuinfo.cpu_flags() == frozenset()


def test_this_machine_parses():
    vendor, flags = cpuinfo.cpu_vendor(), cpuinfo.cpu_flags()
    assert vendor == vendor.strip() and "\n" not in vendor
    assert all(flag and " " not in flag for flag in flags)
