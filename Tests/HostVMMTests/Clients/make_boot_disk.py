#!/usr/bin/python3
"""Builds a bootable disk image the way a distribution's installer lays one out,
for the tests of `hostvmm up --disk` (issue #14), without root, loop devices or
mounts: partition tables by sfdisk, the boot partition made in a file of its own
(mkfs.fat, mtools) and copied into place, the ext4 one at its offset (mke2fs -E offset=).

Usage: make_boot_disk.py bios|uefi OUT KERNEL INITRD [ROOTFS]
       make_boot_disk.py iso OUT KERNEL INITRD

  bios  MBR: partition 1 FAT32 (bootable) holding syslinux, the kernel, the initramfs
        and syslinux.cfg; partition 2 ext4. syslinux's mbr.bin in the boot sector, so
        SeaBIOS -> MBR -> syslinux (installed with --offset) -> kernel.
  uefi  GPT: partition 1 an EFI system partition (FAT32) holding systemd-boot as the
        removable-media path EFI/BOOT/BOOTX64.EFI, a loader entry, the kernel and the
        initramfs; partition 2 ext4. OVMF -> BOOTX64.EFI -> kernel.

Both: kernel command line "console=ttyS0 loglevel=4 panic=-1"; the ext4 partition
(label "data") is empty, for the guest to write to. With ROOTFS (an ext4 file system
image, such as the desktop guest's disk.img), partition 2 is that file system, copied
sparse, and the command line adds "root=/dev/vda2 rw": a distribution's root disk
(the desktop guest's own initramfs mounts root=). Prints the image's path.
  iso   an installer-style CD: ISO 9660 with isolinux as its El Torito boot image
        (xorriso -as mkisofs), the kernel and the initramfs. SeaBIOS -> isolinux -> kernel.

Tools (Debian): isolinux, xorriso; fdisk (sfdisk), dosfstools, mtools, syslinux + syslinux-common,
systemd-boot-efi, e2fsprogs.
"""
import os
import subprocess
import sys

MIB = 1 << 20
BOOT_MIB, ROOT_MIB = 80, 32
CMDLINE = "console=ttyS0 loglevel=4 panic=-1"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def run(*args, stdin=None):
    r = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def mcopy(image, src, dst):
    run("mcopy", "-o", "-i", image, src, f"::{dst}")


def make_iso(out, kernel, initrd):
    tree = out + ".tree"
    os.makedirs(f"{tree}/isolinux", exist_ok=True)
    for src, name in (("/usr/lib/ISOLINUX/isolinux.bin", "isolinux.bin"),
                      ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "ldlinux.c32"),
                      (kernel, "vmlinuz"), (initrd, "initrd.cpio")):
        with open(src, "rb") as f, open(f"{tree}/isolinux/{name}", "wb") as g:
            g.write(f.read())
    with open(f"{tree}/isolinux/isolinux.cfg", "w") as f:
        f.write(f"DEFAULT hostvmm\nTIMEOUT 0\nLABEL hostvmm\n  KERNEL /isolinux/vmlinuz\n"
                f"  INITRD /isolinux/initrd.cpio\n  APPEND {CMDLINE}\n")
    run("xorriso", "-as", "mkisofs", "-quiet", "-o", out, "-V", "HOSTVMM_TEST", "-J", "-R",
        "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
        "-boot-info-table", tree)
    for name in os.listdir(f"{tree}/isolinux"):
        os.unlink(f"{tree}/isolinux/{name}")
    os.rmdir(f"{tree}/isolinux")
    os.rmdir(tree)
    print(out)


def main():
    kind, out, kernel, initrd = sys.argv[1:5]
    rootfs = sys.argv[5] if len(sys.argv) > 5 else None
    if kind == "iso":
        return make_iso(out, kernel, initrd)
    if kind not in ("bios", "uefi"):
        raise SystemExit("kind must be bios, uefi or iso")
    root_mib = -(-os.path.getsize(rootfs) // MIB) if rootfs else ROOT_MIB
    cmdline = CMDLINE + (" root=/dev/vda2 rw" if rootfs else "")
    total = (1 + BOOT_MIB + root_mib + 1) * MIB
    with open(out, "wb") as f:
        f.truncate(total)
    boot_start, root_start = 1 * MIB, (1 + BOOT_MIB) * MIB
    if kind == "bios":
        table = (f"label: dos\nstart={boot_start // 512}, size={BOOT_MIB * MIB // 512}, type=c, bootable\n"
                 f"start={root_start // 512}, size={root_mib * MIB // 512}, type=83\n")
    else:
        table = (f"label: gpt\nstart={boot_start // 512}, size={BOOT_MIB * MIB // 512}, type={ESP_TYPE}, name=esp\n"
                 f"start={root_start // 512}, size={root_mib * MIB // 512}, type={LINUX_TYPE}, name=root\n")
    run("sfdisk", "--no-reread", "--no-tell-kernel", out, stdin=table)
    # The boot partition is made in a file of its own and copied into place: mtools
    # misreads a FAT at an offset in an image of more than 2 GiB (a distribution root
    # beside it). -h: the partition's first sector, which syslinux's boot sector reads.
    part = out + ".boot"
    with open(part, "wb") as f:
        f.truncate(BOOT_MIB * MIB)
    run("mkfs.fat", "-F", "32", "-n", "BOOT", "-h", str(boot_start // 512), part)
    mcopy(part, kernel, "/vmlinuz")
    mcopy(part, initrd, "/initrd.cpio")
    work = out + ".files"
    os.makedirs(work, exist_ok=True)
    if kind == "bios":
        with open(f"{work}/syslinux.cfg", "w") as f:
            f.write(f"DEFAULT hostvmm\nTIMEOUT 0\nLABEL hostvmm\n  KERNEL /vmlinuz\n  INITRD /initrd.cpio\n"
                    f"  APPEND {cmdline}\n")
        mcopy(part, f"{work}/syslinux.cfg", "/syslinux.cfg")
        run("syslinux", "--install", part)
        with open("/usr/lib/syslinux/mbr/mbr.bin", "rb") as f:
            mbr = f.read()
        with open(out, "r+b") as f:
            f.write(mbr[:440])  # the boot code only: the partition table stays
    else:
        run("mmd", "-i", part, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries")
        mcopy(part, "/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "/EFI/BOOT/BOOTX64.EFI")
        with open(f"{work}/loader.conf", "w") as f:
            f.write("default hostvmm.conf\ntimeout 0\n")
        with open(f"{work}/hostvmm.conf", "w") as f:
            f.write(f"title hostvmm test disk\nlinux /vmlinuz\ninitrd /initrd.cpio\noptions {cmdline}\n")
        mcopy(part, f"{work}/loader.conf", "/loader/loader.conf")
        mcopy(part, f"{work}/hostvmm.conf", "/loader/entries/hostvmm.conf")
    run("dd", f"if={part}", f"of={out}", "bs=1M", f"seek={boot_start // MIB}", "conv=notrunc", "status=none")
    os.unlink(part)
    if rootfs:
        # conv=sparse,notrunc: the file system's holes stay holes in the disk.
        run("dd", f"if={rootfs}", f"of={out}", "bs=1M", f"seek={root_start // MIB}", "conv=sparse,notrunc", "status=none")
    else:
        run("mke2fs", "-q", "-t", "ext4", "-L", "data", "-E", f"offset={root_start}", out, f"{ROOT_MIB * 1024}k")
    for name in os.listdir(work):
        os.unlink(f"{work}/{name}")
    os.rmdir(work)
    print(out)


if __name__ == "__main__":
    main()
