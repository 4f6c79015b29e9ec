include $(sort $(wildcard $(BR2_EXTERNAL_KODAMA_PATH)/package/*/*.mk))
