# U-Boot boot script of the nbdroot-imx6 SD card (compiled to boot.scr by mkimage).
# The SABRE Lite's U-Boot (in SPI NOR) runs boot.scr from the first partition it finds;
# the board then boots the initramfs, whose agent mounts the root over NBD.
setenv bootargs console=ttymxc1,115200 rdinit=/init appliance.init=boot
load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} /vmlinuz
load ${devtype} ${devnum}:${distro_bootpart} ${fdt_addr_r} /imx6q-sabrelite.dtb
load ${devtype} ${devnum}:${distro_bootpart} ${ramdisk_addr_r} /initramfs.cpio.gz
bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr_r}
