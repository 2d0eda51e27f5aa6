# U-Boot boot script of the nbdroot-imx6 SD card (compiled to boot.scr by mkimage).
# The SABRE Lite's U-Boot (in SPI NOR) runs boot.scr from the first partition it finds;
# the board then boots the initramfs, whose agent mounts the root over NBD.
# An optional /nbdroot-config.cpio.gz (a board's settings, e.g. from `appliance demo
# --boot uboot`) is loaded right after the initramfs: the kernel unpacks both.
setenv bootargs console=ttymxc1,115200 rdinit=/init appliance.init=boot
load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} /vmlinuz
load ${devtype} ${devnum}:${distro_bootpart} ${fdt_addr_r} /imx6q-sabrelite.dtb
# The initramfs goes 512 bytes past ramdisk_addr_r: QEMU's uSDHC model stops an SDMA
# transfer that starts on a 512 KiB boundary at the next one, which U-Boot does not
# expect (the load hangs); the real uSDHC has no such boundary.  The kernel takes any
# initramfs address.
setexpr nbdroot_rd ${ramdisk_addr_r} + 200
load ${devtype} ${devnum}:${distro_bootpart} ${nbdroot_rd} /initramfs.cpio.gz
setexpr nbdroot_rdsize ${filesize}
setexpr nbdroot_cfg ${nbdroot_rd} + ${filesize}
if load ${devtype} ${devnum}:${distro_bootpart} ${nbdroot_cfg} /nbdroot-config.cpio.gz; then
    setexpr nbdroot_rdsize ${nbdroot_rdsize} + ${filesize}
fi
bootz ${kernel_addr_r} ${nbdroot_rd}:${nbdroot_rdsize} ${fdt_addr_r}
